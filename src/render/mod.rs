//! What the fleet is served as: list bodies in the seed's envelope, the fleet's metric
//! families, QR codes; plain or gzip, rendered once per snapshot from blocks kept between
//! snapshots; and the change stream clients follow instead of polling.

pub mod blocks;
pub mod change_stream;
pub mod gzip;
pub(crate) mod list_bodies;
pub mod metric_families;
pub(crate) mod qr_png;
pub mod rendered;

pub use change_stream::ChangeStream;
pub use rendered::{Rendered, Renderer};
