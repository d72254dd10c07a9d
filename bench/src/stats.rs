//! Percentiles and formatting.

/// The `p`th percentile of sorted nanoseconds.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Nanoseconds as milliseconds.
pub fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}

/// `p50=… p95=… p99=… max=…` of sorted nanoseconds.
pub fn summary(sorted: &[u64]) -> String {
    format!(
        "p50={} p95={} p99={} max={}",
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 95.0)),
        ms(percentile(sorted, 99.0)),
        ms(sorted.last().copied().unwrap_or_default())
    )
}
