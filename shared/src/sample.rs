//! Deterministic sample data: orders (CSV, one large file, one gzip file, many small
//! ones) with a few bad rows of every kind, and a customers lookup table.
//!
//! The same seed always writes the same bytes, so the README's first command shows the
//! same numbers on every machine.

use std::io::Write;
use std::path::Path;

/// A SplitMix64 generator: tiny, seedable, good enough for sample data.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Regions of the sample customers.
pub const REGIONS: [&str; 4] = ["EU", "NA", "APAC", "LATAM"];
const STATUSES: [&str; 4] = ["NEW", "PAID", "SHIPPED", "CANCELLED"];
const NOTES: [&str; 5] = [
    "",
    "gift, wrapped",
    "call before \"delivery\"",
    "leave at door",
    "fragile",
];

/// How many sample customers there are.
pub const CUSTOMERS: u64 = 2_000;

/// What the generator wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SampleStats {
    /// Order records written.
    pub orders: u64,
    /// Of which deliberately bad.
    pub bad: u64,
    /// Bytes written.
    pub bytes: u64,
}

fn order_line(rng: &mut SplitMix, id: u64, bad: bool) -> String {
    let customer = format!("C{:06}", 1 + rng.below(CUSTOMERS));
    let cents = 100 + rng.below(50_000);
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    let status = STATUSES[rng.below(4) as usize];
    let day = 1 + rng.below(28);
    let month = 1 + rng.below(12);
    let year = 2024 + rng.below(2);
    let ts = format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rng.below(24),
        rng.below(60),
        rng.below(60)
    );
    let note = NOTES[rng.below(5) as usize];
    let note = if note.contains([',', '"']) {
        format!("\"{}\"", note.replace('"', "\"\""))
    } else {
        note.to_string()
    };
    let mut f = [
        id.to_string(),
        customer,
        amount,
        status.to_string(),
        ts,
        note,
    ];
    if bad {
        match rng.below(7) {
            0 => f[2] = "12,50x".into(),
            1 => f[2] = format!("-{}", f[2]),
            2 => f[3] = "REFUNDED".into(),
            3 => f[1] = "X12".into(),
            4 => f[4] = format!("{year}-02-30T10:00:00Z"),
            5 => return format!("{},{},{}", f[0], f[1], f[2]),
            _ => f[0] = String::new(),
        }
    }
    f.join(",")
}

fn write_orders(
    path: &Path,
    rng: &mut SplitMix,
    first_id: u64,
    rows: u64,
    gzip: bool,
    stats: &mut SampleStats,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::from("order_id,customer_id,amount,status,ordered_at,note\n");
    for i in 0..rows {
        let bad = rng.below(250) == 0;
        stats.bad += u64::from(bad);
        text.push_str(&order_line(rng, first_id + i, bad));
        text.push('\n');
    }
    stats.orders += rows;
    let bytes = if gzip {
        let mut e = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::new(6));
        e.write_all(text.as_bytes())?;
        e.finish()?
    } else {
        text.into_bytes()
    };
    stats.bytes += bytes.len() as u64;
    std::fs::write(path, bytes)
}

/// Writes `dir/customers.csv` and `dir/orders/…` for about `rows` orders.
pub fn write_sample(dir: &Path, rows: u64, seed: u64) -> std::io::Result<SampleStats> {
    let mut rng = SplitMix::new(seed);
    let mut stats = SampleStats::default();
    std::fs::create_dir_all(dir)?;
    let mut customers = String::from("customer_id,name,region,segment\n");
    for c in 1..=CUSTOMERS {
        let region = REGIONS[rng.below(4) as usize];
        let segment = ["retail", "business", "enterprise"][rng.below(3) as usize];
        customers.push_str(&format!("C{c:06},Customer {c},{region},{segment}\n"));
    }
    std::fs::write(dir.join("customers.csv"), customers)?;
    let big = rows / 2;
    let gz = rows / 4;
    let small_files = 12u64;
    let small = (rows - big - gz) / small_files;
    let orders = dir.join("orders");
    write_orders(
        &orders.join("2024/orders-2024-h1.csv"),
        &mut rng,
        1,
        big,
        false,
        &mut stats,
    )?;
    write_orders(
        &orders.join("2024/orders-2024-h2.csv.gz"),
        &mut rng,
        1 + big,
        gz,
        true,
        &mut stats,
    )?;
    for m in 0..small_files {
        let first = 1 + big + gz + m * small;
        write_orders(
            &orders.join(format!("2025/orders-2025-{:02}.csv", m + 1)),
            &mut rng,
            first,
            small,
            false,
            &mut stats,
        )?;
    }
    Ok(stats)
}
