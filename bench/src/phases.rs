//! Where a mutation's time goes, from the servers' own histograms: `/metrics` of every
//! server is read before and after the measured window, and the difference says how long
//! the window's requests, SQL statements and rate-limit checks took on the servers. The
//! bench's clocks say how long the client waited; these say which part of that the server
//! spent waiting on PostgreSQL and Redis.

use std::collections::BTreeMap;

use crate::server::Server;

/// A histogram read: its name, labels its buckets must carry, and how it is shown.
struct Series {
    name: &'static str,
    labels: &'static str,
    shown: &'static str,
}

const SERIES: [Series; 4] = [
    Series {
        name: "tasknest_http_request_duration_seconds",
        labels: "method=\"POST\",path=\"/graphql\",status=\"200\"",
        shown: "request (mutation over HTTP)",
    },
    Series {
        name: "tasknest_rate_limit_check_duration_seconds",
        labels: "",
        shown: "  rate-limit check (Redis)",
    },
    Series {
        name: "tasknest_db_statement_duration_seconds",
        labels: "",
        shown: "  SQL statement (PostgreSQL)",
    },
    Series {
        name: "tasknest_event_commit_to_delivery_seconds",
        labels: "",
        shown: "event: commit → its room",
    },
];

/// Cumulative bucket counts by upper bound, summed over the servers, one map per entry of
/// [`SERIES`].
pub struct Snapshot(Vec<BTreeMap<Bound, f64>>);

/// A bucket's upper bound in nanoseconds (`+Inf` is `u64::MAX`), so that bounds order and
/// compare exactly.
type Bound = u64;

fn seconds(bound: Bound) -> f64 {
    if bound == u64::MAX {
        f64::INFINITY
    } else {
        bound as f64 / 1e9
    }
}

/// Reads every server's histograms. A server that does not answer counts as empty, so a
/// bench run never fails on its diagnostics.
pub async fn snapshot(http: &reqwest::Client, servers: &[Server]) -> Snapshot {
    let mut sums = vec![BTreeMap::new(); SERIES.len()];
    for server in servers {
        let url = format!("http://127.0.0.1:{}/metrics", server.port);
        let Ok(response) = http.get(url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        for (series, sum) in SERIES.iter().zip(&mut sums) {
            for (bound, count) in buckets(&text, series) {
                *sum.entry(bound).or_insert(0.0) += count;
            }
        }
    }
    Snapshot(sums)
}

/// The buckets of one series in the text exposition: `<name>_bucket{le="0.004",...} 12`.
fn buckets<'a>(text: &'a str, series: &'a Series) -> impl Iterator<Item = (Bound, f64)> + 'a {
    text.lines()
        .filter(move |line| {
            line.strip_prefix(series.name)
                .is_some_and(|rest| rest.starts_with("_bucket{") && rest.contains(series.labels))
        })
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                u64::MAX
            } else {
                (le.parse::<f64>().ok()? * 1e9).round() as u64
            };
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
}

/// Prints, per histogram, what happened between `before` and `after`: how many, p50 and
/// p99 (linear within the bucket, as Prometheus' `histogram_quantile`), and the share over
/// 4 ms.
pub fn print(before: &Snapshot, after: &Snapshot) {
    println!("server side, this window (from the servers' own histograms):");
    for (series, (b, a)) in SERIES.iter().zip(before.0.iter().zip(&after.0)) {
        let label = series.shown;
        let window: Vec<(f64, f64)> = a
            .iter()
            .map(|(bound, count)| {
                (
                    seconds(*bound),
                    count - b.get(bound).copied().unwrap_or(0.0),
                )
            })
            .collect();
        let total = window.last().map_or(0.0, |(_, count)| *count);
        if total < 1.0 {
            println!("{label}: none");
            continue;
        }
        let over_4ms = 100.0 * (1.0 - at_most(&window, 0.004) / total);
        println!(
            "{label}: n={total:.0} p50={:.2} ms p99={:.2} ms over 4 ms: {over_4ms:.1}%",
            quantile(&window, 0.50) * 1000.0,
            quantile(&window, 0.99) * 1000.0,
        );
    }
}

/// How many of cumulative `(upper bound, count)` buckets are at most `x`, interpolated
/// linearly inside the bucket that holds `x`.
fn at_most(buckets: &[(f64, f64)], x: f64) -> f64 {
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if x <= bound {
            if bound.is_infinite() {
                return lower.1;
            }
            return lower.1 + (count - lower.1) * (x - lower.0) / (bound - lower.0);
        }
        lower = (bound, count);
    }
    lower.1
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets, interpolated linearly
/// inside its bucket; the largest finite bound when it falls in `+Inf`.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return lower.0;
            }
            let inside = count - lower.1;
            let share = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return lower.0 + (bound - lower.0) * share;
        }
        lower = (bound, count);
    }
    lower.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_read_from_the_exposition_and_quantiles_interpolate_inside_a_bucket() {
        let text = "\
tasknest_db_statement_duration_seconds_bucket{le=\"0.001\"} 50
tasknest_db_statement_duration_seconds_bucket{le=\"0.002\"} 90
tasknest_db_statement_duration_seconds_bucket{le=\"0.004\"} 100
tasknest_db_statement_duration_seconds_bucket{le=\"+Inf\"} 100
tasknest_db_statement_duration_seconds_count 100
tasknest_http_request_duration_seconds_bucket{le=\"0.001\",method=\"GET\",path=\"/metrics\",status=\"200\"} 7
tasknest_http_request_duration_seconds_bucket{le=\"0.001\",method=\"POST\",path=\"/graphql\",status=\"200\"} 3
";
        let read: Vec<(f64, f64)> = buckets(text, &SERIES[2])
            .map(|(bound, count)| (seconds(bound), count))
            .collect();
        assert_eq!(
            read,
            [
                (0.001, 50.0),
                (0.002, 90.0),
                (0.004, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
        assert!((quantile(&read, 0.5) - 0.001).abs() < 1e-12);
        // The 99th of 100 lies nine tenths into the (2 ms, 4 ms] bucket.
        assert!((quantile(&read, 0.99) - 0.0038).abs() < 1e-12);
        // 3 ms is half way through (2 ms, 4 ms]: 95 of 100.
        assert!((at_most(&read, 0.003) - 95.0).abs() < 1e-9);
        assert!((at_most(&read, 0.004) - 100.0).abs() < 1e-9);
        // Only the mutations' requests, whatever the order of the labels.
        let requests: Vec<f64> = buckets(text, &SERIES[0]).map(|(_, count)| count).collect();
        assert_eq!(requests, [3.0]);
    }
}
