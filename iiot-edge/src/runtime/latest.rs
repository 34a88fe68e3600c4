//! The latest reading of every tag, as the sources produced it (before report by
//! exception): what command interlocks, rate-of-change checks and relative
//! commands read.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use iiot_core::quality::Quality;
use iiot_core::types::{Sample, TagPath, Timestamp, Value};

/// The newest reading of one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// Its value; `None` when it could not be read.
    pub value: Option<Value>,
    /// Its quality.
    pub quality: Quality,
    /// Its source time.
    pub source_time: Timestamp,
    /// When the runtime received it (monotonic, immune to clock steps).
    pub received: Instant,
}

/// The latest reading per tag, shared by the runtime (which writes every reading
/// into it) and the command executor (which reads it). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LatestValues {
    inner: Arc<RwLock<HashMap<TagPath, Latest>>>,
}

impl LatestValues {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reading` as the newest of its tag.
    pub fn record(&self, reading: &Sample) {
        let latest = Latest {
            value: reading.value().cloned(),
            quality: reading.quality(),
            source_time: reading.source_time(),
            received: Instant::now(),
        };
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get_mut(reading.tag()) {
            *slot = latest;
        } else {
            map.insert(reading.tag().clone(), latest);
        }
    }

    /// The newest reading of `tag`, if any came.
    pub fn get(&self, tag: &TagPath) -> Option<Latest> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tag)
            .cloned()
    }

    /// How many tags have a reading.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no tag has a reading yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
