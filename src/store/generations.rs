//! The in-memory side of `store::cache`: the newest generation known of each group of cached
//! tables, and the values kept under each (a file of its own so that `Db` can hold it).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

/// More entries than this in one group (terminal keys, stores) and the group starts afresh.
const MAX_ENTRIES: usize = 20_000;

/// The groups of cached tables, one generation each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `switches` (kill switches and freezes).
    Switches,
    /// `risk_rules`.
    RiskRules,
    /// `merchants`, `stores`, `terminals`, `webhook_endpoints`.
    Merchants,
}

impl Group {
    pub(super) const ALL: [Group; 3] = [Group::Switches, Group::RiskRules, Group::Merchants];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Switches => "switches",
            Group::RiskRules => "risk_rules",
            Group::Merchants => "merchants",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

type Entry = (i64, Arc<dyn Any + Send + Sync>);

/// The newest generation known of each group, and the values cached under each.
#[derive(Default)]
pub struct Caches {
    known: [AtomicI64; 3],
    values: [RwLock<HashMap<String, Entry>>; 3],
    /// Caches that a capability above the store keeps per instance (one per type), with staleness
    /// rules of their own: merchants' analytics keep closed days here.
    instance: std::sync::Mutex<HashMap<std::any::TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").field("known", &self.known).finish_non_exhaustive()
    }
}

impl Caches {
    /// Learns generations; a value cached under an older one is loaded again when next asked for.
    pub(super) fn learn(&self, group: Group, generation: i64) {
        self.known[group.index()].fetch_max(generation, Ordering::AcqRel);
    }

    pub(super) fn lookup<T: Send + Sync + 'static>(&self, group: Group, key: &str) -> Option<Arc<T>> {
        let known = self.known[group.index()].load(Ordering::Acquire);
        let values = self.values[group.index()].read().unwrap_or_else(|e| e.into_inner());
        let (generation, value) = values.get(key)?;
        if *generation < known {
            return None;
        }
        value.clone().downcast::<T>().ok()
    }

    /// This instance's value of type `T`, made by `make` when first asked for.
    pub(super) fn instance<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let key = std::any::TypeId::of::<T>();
        let mut slots = self.instance.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = slots.get(&key).and_then(|v| v.clone().downcast::<T>().ok()) {
            return value;
        }
        let value = Arc::new(make());
        slots.insert(key, value.clone());
        value
    }

    /// This instance's value of type `T`, if one was made.
    pub(super) fn instance_if<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let slots = self.instance.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(&std::any::TypeId::of::<T>()).and_then(|v| v.clone().downcast::<T>().ok())
    }

    pub(super) fn keep(&self, group: Group, key: &str, generation: i64, value: Arc<dyn Any + Send + Sync>) {
        let mut values = self.values[group.index()].write().unwrap_or_else(|e| e.into_inner());
        if values.len() >= MAX_ENTRIES {
            values.clear();
        }
        values.insert(key.to_string(), (generation, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_used_only_under_the_newest_generation() {
        let c = Caches::default();
        c.learn(Group::Switches, 3);
        c.keep(Group::Switches, "k", 3, Arc::new(7u32));
        assert_eq!(c.lookup::<u32>(Group::Switches, "k").as_deref(), Some(&7));
        // Another group's change leaves it alone; its own makes it stale.
        c.learn(Group::RiskRules, 9);
        assert_eq!(c.lookup::<u32>(Group::Switches, "k").as_deref(), Some(&7));
        c.learn(Group::Switches, 4);
        assert!(c.lookup::<u32>(Group::Switches, "k").is_none());
        // Generations only move forward.
        c.learn(Group::Switches, 2);
        c.keep(Group::Switches, "k", 4, Arc::new(8u32));
        assert_eq!(c.lookup::<u32>(Group::Switches, "k").as_deref(), Some(&8));
        // A value of another type under the key is not taken for this one.
        assert!(c.lookup::<String>(Group::Switches, "k").is_none());
    }
}
