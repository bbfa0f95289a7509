//! Operator interfaces: the admin console (database `pgrouter`: SHOW,
//! RELOAD, PAUSE/RESUME; [`console`]) and the HTTP endpoint with the
//! Prometheus metrics and the Kubernetes probes ([`http`], metrics text from
//! [`exposition`]).

pub mod console;
pub mod exposition;
pub mod http;
