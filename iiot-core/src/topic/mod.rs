//! UNS topics. (Placeholder: the grammar lands with the topic module.)
