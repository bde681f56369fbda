//! Everything authback asks Klarna: the API client (Read Session), the
//! recovery of callbacks that never came (reconcile), the watch that
//! checks an order was placed (order_watch), and whether Klarna answers at
//! all, as all of them find it (health).

pub(crate) mod client;
pub(crate) mod health;
pub(crate) mod order_watch;
pub(crate) mod reconcile;
