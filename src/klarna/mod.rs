//! Everything authback asks Klarna: the API client (Read Session), the
//! recovery of callbacks that never came (reconcile) and the watch that
//! checks an order was placed (order_watch).

pub(crate) mod client;
pub(crate) mod order_watch;
pub(crate) mod reconcile;
