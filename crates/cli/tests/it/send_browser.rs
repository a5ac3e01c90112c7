//! `switchboard send` / `receive` with a browser on the other side: the `/send` page in Chromium.
