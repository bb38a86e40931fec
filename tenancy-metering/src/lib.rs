//! Usage metering for the tenancy SDK: meters declared by the host and
//! usage events checked against them. Stores, rollups and queries follow.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod event;
mod meter;

pub use tenancy_core;

pub use event::{
    Dimensions, Event, EventError, IdempotencyKey, IngestWindow, MAX_DIMENSION_VALUE_LEN,
    MAX_KEY_LEN, NewEvent,
};
pub use meter::{
    Aggregation, DimensionName, MAX_KEPT_DIMENSIONS, MAX_NAME_LEN, Meter, MeterError, MeterName,
    Meters,
};
