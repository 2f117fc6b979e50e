//! Faults: crashes, restarts, partitions and retries under a recorded client workload, each
//! ending with the history checker (`cluster_tests::history`). t50: scenarios; t60: the seeded
//! randomized test (`STOA_SEED`, `STOA_RANDOM_SECS`); t70: real processes in network namespaces.

mod t50_crash;
mod t50_kill9;
mod t50_partition;
mod t50_retry;
mod t60_random;
mod t70_netns;
mod t90_regressions;
