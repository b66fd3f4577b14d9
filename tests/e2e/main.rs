//! End-to-end tests: the real binary, real sockets, real clients.

mod api;
mod badinput;
mod batch;
mod cli;
mod cluster;
mod cluster_failover;
mod collab;
mod common;
mod core;
mod fallback;
mod fanout;
mod hardening;
mod http2;
mod nginx;
mod openapi;
mod ops;
mod pusher;
mod redis;
mod reload;
mod resilience;
mod resume;
mod security;
mod seeds;
mod sidedoors;
mod store;
