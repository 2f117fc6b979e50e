//! Replication: posts are stored on a majority, ordered per room, delivered live on every node, and
//! survive node stops, restarts and SIGKILL.

mod t10_basic;
mod t20_lifecycle;
mod t30_access;
mod t40_content;
mod t50_faults;
