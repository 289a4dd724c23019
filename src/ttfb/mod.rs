//! `edgepop ttfb`: the load testers' tool. It loads one or more targets
//! (closed model: N connections as wrk; open model: a fixed rate with
//! coordinated-omission correction as oha's), times each request's phases,
//! and groups the results by what edgepop says in its headers: the PoP
//! that answered (`x-edge-route`), the cache status, the status code, and
//! the `server-timing` parts beside the client-side phases.
//!
//! `plan` says what to run, `conn` opens and uses one connection (`quic`
//! its HTTP/3 kind), `load`
//! runs the workers, `summary` folds samples into HDR histograms and the
//! JSON report, `render` prints it (table, CSV, HTML) and `svg` draws it.

mod conn;
mod load;
mod plan;
mod quic;
pub mod render;
pub mod sample;
pub mod summary;
pub mod svg;

pub use load::run;
pub use plan::{Model, Plan, Protocol, Stop, Target};
pub use summary::Report;
