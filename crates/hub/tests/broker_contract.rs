//! The broker contract (module docs of `switchboard_hub::broker`) checked on the
//! `MemoryBroker`, on fake time. tests/redis.rs runs the same checks (tests/common/contract.rs)
//! on the `RedisBroker` with two nodes.

#[path = "common/contract.rs"]
#[macro_use]
mod contract;

use std::sync::Arc;

use switchboard_hub::{BoxFuture, Broker, ManualClock, MemoryBroker};

/// 2026-01-01T00:00:00Z in ms.
const T0: u64 = 1_767_225_600_000;

fn memory() -> contract::Env {
    let clock = Arc::new(ManualClock::new(T0));
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(clock.clone()));
    contract::Env::new(vec![broker], move |d| -> BoxFuture<'static, ()> {
        clock.advance(d);
        Box::pin(async {})
    })
}

contract_tests!(memory());
