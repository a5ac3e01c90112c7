//! `switchboard send` / `receive` across the NAT lab: the 4x4 matrix of NAT types.
