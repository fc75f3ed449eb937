//! The runtime around the data path: the sync loop, signals, shutdown (and later, reload).
