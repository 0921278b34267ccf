//! libpgq
pub mod admin;
pub mod client;
pub mod consumer;
pub mod coop;
mod direct;
pub mod error;
pub mod event;
pub mod ffi;
mod look_ahead;
pub mod producer;
pub mod schema;
pub mod ticker;
pub mod wakeup;
pub mod worker;

pub use admin::{BatchInfo, ConsumerInfo, QueueInfo, QueueParam};
pub use client::{Client, ClientBuilder, PooledConnection};
pub use consumer::{Batch, Consumer, Events, NextBatch};
pub use coop::BatchHandling;
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, NewEvent};
pub use producer::Producer;
pub use schema::InstallOutcome;
pub use ticker::{
    MaintenanceReport, Ticker, TickerBuilder, TickerDatabaseStats, TickerState, TickerStats,
};
pub use worker::{ErrorPolicy, WorkBatch, WorkEvents, Worker, WorkerBuilder, WorkerStats};
