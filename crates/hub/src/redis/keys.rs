//! Key and pub/sub channel names (the layout is described on [`super::RedisBroker`]).

/// Key and channel names.
pub(super) struct Keys {
    pub(super) prefix: String,
    /// `P:ch:`, the prefix of channel pub/sub names.
    pub(super) pubsub_prefix: String,
    /// `P:control`.
    pub(super) control: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            pubsub_prefix: format!("{prefix}:ch:"),
            control: format!("{prefix}:control"),
        }
    }

    pub(super) fn meta(&self, channel: &str) -> String {
        format!("{}:meta:{{{channel}}}", self.prefix)
    }

    pub(super) fn hist(&self, channel: &str) -> String {
        format!("{}:hist:{{{channel}}}", self.prefix)
    }

    pub(super) fn idem(&self, channel: &str, key: &str) -> String {
        format!("{}:idem:{{{channel}}}:{key}", self.prefix)
    }

    pub(super) fn pres(&self, channel: &str) -> String {
        format!("{}:pres:{{{channel}}}", self.prefix)
    }

    pub(super) fn pexp(&self, channel: &str) -> String {
        format!("{}:pexp:{{{channel}}}", self.prefix)
    }

    /// `P:cnt:KEY`: a cluster-wide count, node → count.
    pub(super) fn count(&self, key: &str) -> String {
        format!("{}:cnt:{key}", self.prefix)
    }

    /// `P:cntnodes`: the nodes holding counts.
    pub(super) fn count_nodes(&self) -> String {
        format!("{}:cntnodes", self.prefix)
    }

    /// `P:cntnode:NODE`: the keys a node holds counts of.
    pub(super) fn count_node(&self, node: &str) -> String {
        format!("{}:cntnode:{node}", self.prefix)
    }

    /// `P:alive:NODE`: a node's heartbeat (expires unless refreshed).
    pub(super) fn alive(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }

    pub(super) fn pubsub(&self, channel: &str) -> String {
        format!("{}{channel}", self.pubsub_prefix)
    }
}
