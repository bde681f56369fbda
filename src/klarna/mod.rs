//! Everything authback asks Klarna: the API client (Read Session), the
//! recovery of callbacks that never came (reconcile) and the watch that
//! checks an order was placed (order_watch).

pub mod client;
pub mod order_watch;
pub mod reconcile;
