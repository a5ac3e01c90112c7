//! The Lua scripts of the Redis broker, one file each in `lua/` (embedded at build time). What
//! each takes (KEYS, ARGV) and returns is written at the top of its file. Every script but
//! `presence_remove.lua`, `count.lua` and `count_sweep.lua` starts with `lua/prelude.lua`: effects replication and `now`, the
//! Redis server's time in ms.

use ::redis::Script;

/// A script whose text is `lua/prelude.lua` followed by `lua/<file>`.
macro_rules! with_prelude {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

pub(super) struct Scripts {
    /// Numbers, stores and publishes a publication (`publish.lua`).
    pub(super) publish: Script,
    /// Reads a channel's position and publications (`history.lua`).
    pub(super) history: Script,
    /// Keeps a never-published stream alive (`touch.lua`).
    pub(super) touch: Script,
    /// Adds or refreshes a presence entry (`presence_add.lua`).
    pub(super) presence_add: Script,
    /// Removes a presence entry (`presence_remove.lua`).
    pub(super) presence_remove: Script,
    /// Reads presence, dropping expired entries (`presence_get.lua`).
    pub(super) presence_get: Script,
    /// Changes a node's cluster-wide count of a key (`count.lua`).
    pub(super) count: Script,
    /// Drops the counts of nodes that stopped heartbeating (`count_sweep.lua`).
    pub(super) count_sweep: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            publish: with_prelude!("publish.lua"),
            history: with_prelude!("history.lua"),
            touch: with_prelude!("touch.lua"),
            presence_add: with_prelude!("presence_add.lua"),
            presence_remove: Script::new(include_str!("lua/presence_remove.lua")),
            presence_get: with_prelude!("presence_get.lua"),
            count: Script::new(include_str!("lua/count.lua")),
            count_sweep: Script::new(include_str!("lua/count_sweep.lua")),
        }
    }
}
