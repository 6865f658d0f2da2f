//! How a job's output is cut into files: files per partition and the spread of file sizes.
//!
//! Readers pay per file (Athena, Spark and DuckDB open each one, and S3 serves a prefix at
//! a bounded request rate), so many small files cost more than their bytes. [`FileSizes`]
//! is computed from any list of files with their partition and size — the manifest's files
//! today, and the chunk files and the compacted files of a compaction stage side by side
//! ("before and after") once there is one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Files under this size count as small in [`FileSizes::small_files`] (1 MiB: far under
/// the 128 MiB–1 GiB that Athena's and Spark's tuning guides ask for, so a file below it
/// is mostly per-file overhead to its reader).
pub const SMALL_FILE_BYTES: u64 = 1 << 20;

/// Minimum, 10th percentile, median, 90th percentile and maximum of a list of counts.
///
/// Percentiles interpolate linearly between the two nearest ranks (NumPy's and pandas'
/// default, Hyndman and Fan's type 7), so the median of an even count is the mean of the
/// two middle values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Smallest value.
    pub min: u64,
    /// 10th percentile.
    pub p10: f64,
    /// Median (50th percentile).
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest value.
    pub max: u64,
}

impl Spread {
    /// The spread of `values` (in any order), or `None` when there is none.
    ///
    /// ```
    /// use fanout::job::Spread;
    /// let s = Spread::of(vec![40, 10, 30, 20]).unwrap();
    /// assert_eq!((s.min, s.median, s.max), (10, 25.0, 40));
    /// assert!(Spread::of(vec![]).is_none());
    /// ```
    pub fn of(mut values: Vec<u64>) -> Option<Spread> {
        values.sort_unstable();
        let (&min, &max) = (values.first()?, values.last()?);
        Some(Spread {
            min,
            p10: percentile(&values, 0.1),
            median: percentile(&values, 0.5),
            p90: percentile(&values, 0.9),
            max,
        })
    }
}

/// The `q` quantile of sorted, non-empty `sorted`, interpolated between the nearest ranks.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    let at = (sorted.len() - 1) as f64 * q;
    let below = at.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let (lo, hi) = (sorted[below] as f64, sorted[above] as f64);
    lo + (hi - lo) * (at - below as f64)
}

/// Files per partition and the spread of file sizes of a set of output files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSizes {
    /// Files.
    pub files: u64,
    /// Partitions holding at least one file.
    pub partitions: u64,
    /// Bytes of every file.
    pub total_bytes: u64,
    /// Files per partition, over the partitions; `None` without files.
    pub files_per_partition: Option<Spread>,
    /// File sizes in bytes; `None` without files.
    pub file_bytes: Option<Spread>,
    /// Files under `small_file_bytes`.
    pub small_files: u64,
    /// The size under which a file counts as small ([`SMALL_FILE_BYTES`]).
    pub small_file_bytes: u64,
}

impl FileSizes {
    /// The figures of `files`, each a partition path (`col=value/…`, empty when
    /// unpartitioned) and its size in bytes.
    ///
    /// ```
    /// use fanout::job::FileSizes;
    /// let s = FileSizes::of([("d=1", 10u64), ("d=1", 30), ("d=2", 2 << 20)]);
    /// assert_eq!((s.files, s.partitions, s.small_files), (3, 2, 2));
    /// assert_eq!(s.files_per_partition.unwrap().max, 2);
    /// assert_eq!(s.file_bytes.unwrap().median, 30.0);
    /// ```
    pub fn of<P: AsRef<str>>(files: impl IntoIterator<Item = (P, u64)>) -> FileSizes {
        let mut per_partition: BTreeMap<String, u64> = BTreeMap::new();
        let mut sizes = Vec::new();
        for (partition, bytes) in files {
            *per_partition
                .entry(partition.as_ref().to_string())
                .or_insert(0) += 1;
            sizes.push(bytes);
        }
        FileSizes {
            files: sizes.len() as u64,
            partitions: per_partition.len() as u64,
            total_bytes: sizes.iter().sum(),
            small_files: sizes.iter().filter(|b| **b < SMALL_FILE_BYTES).count() as u64,
            small_file_bytes: SMALL_FILE_BYTES,
            files_per_partition: Spread::of(per_partition.into_values().collect()),
            file_bytes: Spread::of(sizes),
        }
    }
}

/// The partition path of an output key: the folders before the file name (empty for a
/// file at the top of the output location), as the manifest's partitions name them.
///
/// ```
/// assert_eq!(fanout::job::partition_path("a=1/b=x/part-0.parquet"), "a=1/b=x");
/// assert_eq!(fanout::job::partition_path("part-0.parquet"), "");
/// ```
pub fn partition_path(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_have_no_spread() {
        let s = FileSizes::of(Vec::<(&str, u64)>::new());
        assert_eq!(
            s,
            FileSizes {
                files: 0,
                partitions: 0,
                total_bytes: 0,
                files_per_partition: None,
                file_bytes: None,
                small_files: 0,
                small_file_bytes: SMALL_FILE_BYTES,
            }
        );
    }

    #[test]
    fn one_file_is_every_percentile() {
        let s = FileSizes::of([("", 5_000_000u64)]);
        let one = Spread {
            min: 5_000_000,
            p10: 5e6,
            median: 5e6,
            p90: 5e6,
            max: 5_000_000,
        };
        assert_eq!(s.file_bytes, Some(one));
        assert_eq!(
            s.files_per_partition,
            Some(Spread {
                min: 1,
                p10: 1.0,
                median: 1.0,
                p90: 1.0,
                max: 1
            })
        );
        assert_eq!(
            (s.files, s.partitions, s.total_bytes, s.small_files),
            (1, 1, 5_000_000, 0)
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        // Sorted: 100, 200, 400, 1000. Ranks at (n-1)·q = 0.3, 1.5, 2.7:
        // p10 = 100 + 0.3·100 = 130, median = (200 + 400)/2 = 300, p90 = 400 + 0.7·600 = 820.
        let s = Spread::of(vec![1000, 100, 400, 200]).unwrap();
        assert_eq!(s.min, 100);
        assert_eq!(s.max, 1000);
        assert!((s.p10 - 130.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.median, 300.0);
        assert!((s.p90 - 820.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn an_odd_count_has_its_middle_value_as_median() {
        // Ranks 0.4, 2, 3.6 of 1, 2, 3, 4, 100.
        let s = Spread::of(vec![3, 1, 100, 2, 4]).unwrap();
        assert!((s.p10 - 1.4).abs() < 1e-9, "{s:?}");
        assert_eq!(s.median, 3.0);
        assert!((s.p90 - (4.0 + 0.6 * 96.0)).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn files_are_counted_per_partition_and_small_files_under_one_mib() {
        let mib = SMALL_FILE_BYTES;
        let files = [
            ("d=1", mib - 1),
            ("d=1", mib),
            ("d=1", 3 * mib),
            ("d=2", 10),
            ("d=3", 20),
            ("d=3", 30),
        ];
        let s = FileSizes::of(files);
        assert_eq!(s.files, 6);
        assert_eq!(s.partitions, 3);
        assert_eq!(s.total_bytes, 5 * mib - 1 + 60);
        // mib - 1, 10, 20 and 30 are small; a file of exactly 1 MiB is not.
        assert_eq!(s.small_files, 4);
        // Files per partition: 1, 2, 3 (ranks 0.2, 1, 1.8).
        let p = s.files_per_partition.unwrap();
        assert_eq!((p.min, p.median, p.max), (1, 2.0, 3));
        assert!(
            (p.p10 - 1.2).abs() < 1e-9 && (p.p90 - 2.8).abs() < 1e-9,
            "{p:?}"
        );
        let b = s.file_bytes.unwrap();
        // Sorted: 10, 20, 30, mib-1, mib, 3mib: the median is between 30 and mib-1.
        assert_eq!(b.median, (30 + mib - 1) as f64 / 2.0);
        assert_eq!((b.min, b.max), (10, 3 * mib));
    }

    #[test]
    fn partition_paths_group_by_folder() {
        let s = FileSizes::of(
            ["a=1/b=2/x.parquet", "a=1/b=2/y.parquet", "a=1/z.parquet"]
                .into_iter()
                .map(|k| (partition_path(k), 1u64)),
        );
        assert_eq!(s.partitions, 2);
        assert_eq!(s.files_per_partition.map(|p| p.max), Some(2));
    }
}
