use super::*;

#[test]
fn decimals_within_precision_and_scale_only() {
    assert_eq!(decimal(b"21168.23", 15, 2), Some(2_116_823));
    assert_eq!(decimal(b"17", 15, 2), Some(1700));
    assert_eq!(decimal(b"-0.5", 15, 2), Some(-50));
    assert_eq!(decimal(b"1.005", 15, 2), None);
    assert_eq!(decimal(b"1234", 5, 2), None);
    for bad in [&b"1."[..], b".5", b"+1", b" 1", b"1e3", b"", b"-"] {
        assert_eq!(decimal(bad, 15, 2), None, "{bad:?}");
    }
}

/// `text` as records of (id int64, s text), split by hand where it can when `split`.
fn decoded(text: &[u8], opts: &CsvOptions, split: bool) -> Option<Decoded> {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]);
    let at = Records {
        start: 0,
        first_line: 0,
        map: &[0, 1],
        expected: 2,
    };
    decode_with(text, at, opts, &schema, "t.csv", split)
}

fn fast(text: &[u8]) -> Option<Decoded> {
    decoded(text, &CsvOptions::default(), true)
}

#[test]
fn clean_records_are_read_and_anything_else_goes_the_general_way() {
    let d = fast(b"1,\"a,b\"\r\n\n2,\"say \"\"hi\"\"\"\r\n3,\n").unwrap();
    assert_eq!(d.batch.num_rows(), 3);
    assert_eq!(
        d.origins
            .iter()
            .map(|o| (o.start, o.line))
            .collect::<Vec<_>>(),
        [(0, 0), (10, 2), (26, 3)]
    );
    // A quote left open in the last record (the text ends at a line end).
    assert!(fast(b"1,ok\n2,\"open\n").is_none());
    // A quote across lines, a wrong field count, a value with padding, a lone CR.
    assert!(fast(b"1,\"a\nb\"\n").is_none());
    assert!(fast(b"1,a,b\n").is_none());
    assert!(fast(b" 1,a\n").is_none());
    assert!(fast(b"1,a\r2,b\r").is_none());
}

#[test]
fn plain_numbers_and_dates_only() {
    assert_eq!(int::<i64>(b"-0042"), Some(-42));
    assert_eq!(int::<i8>(b"128"), None);
    assert_eq!(int::<i64>(b"+1"), None);
    assert_eq!(float::<f64>(b"2.5e-3"), Some(0.0025));
    assert_eq!(float::<f64>(b"inf"), None);
    assert_eq!(float::<f64>(b"1."), None);
    assert_eq!(date(b"1970-01-01"), Some(0));
    assert_eq!(date(b"1996-03-13"), Some(9568));
    assert_eq!(date(b"1996-02-30"), None);
    assert_eq!(date(b"1996-3-13 "), None);
    assert_eq!(int::<u8>(b"-0"), None);
    assert_eq!(int::<u64>(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(int::<u64>(b"18446744073709551616"), None);
    assert_eq!(int::<i64>(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(int::<i64>(b"9223372036854775808"), None);
    assert_eq!(int::<i32>(b"000000000000000000000000007"), Some(7));
    for bad in [&b""[..], b"-", b"1-", b"--1", b"1 ", b"0x1"] {
        assert_eq!(int::<i64>(bad), None, "{bad:?}");
    }
}

#[test]
fn integers_read_as_str_parse_reads_them() {
    for s in [
        "0",
        "-0",
        "7",
        "-128",
        "-129",
        "127",
        "128",
        "255",
        "256",
        "65535",
        "-32768",
        "2147483647",
        "2147483648",
        "-2147483649",
        "4294967295",
        "4294967296",
    ] {
        let b = s.as_bytes();
        assert_eq!(int::<i8>(b), s.parse().ok(), "i8 {s}");
        assert_eq!(int::<u8>(b), s.parse().ok(), "u8 {s}");
        assert_eq!(int::<i16>(b), s.parse().ok(), "i16 {s}");
        assert_eq!(int::<u16>(b), s.parse().ok(), "u16 {s}");
        assert_eq!(int::<i32>(b), s.parse().ok(), "i32 {s}");
        assert_eq!(int::<u32>(b), s.parse().ok(), "u32 {s}");
    }
}

#[test]
fn dates_of_years_0_to_9999_as_chrono_reads_them() {
    // Every month of every year: its first, middle and last days, and the days just
    // past its end (leap years included), as well as day 0 and month 13.
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    for y in 0..=9999 {
        for m in 1..=13u32 {
            for d in [0u32, 1, 15, 28, 29, 30, 31, 32] {
                let text = format!("{y:04}-{m:02}-{d:02}");
                let want =
                    chrono::NaiveDate::from_ymd_opt(y, m, d).map(|x| (x - epoch).num_days() as i32);
                assert_eq!(date(text.as_bytes()), want, "{text}");
            }
        }
    }
}

#[test]
fn lines_split_as_csv_core_splits_them() {
    let escaping = CsvOptions {
        escape: Some(b'\\'),
        ..CsvOptions::default()
    };
    let texts: [&[u8]; 16] = [
        b"1,a b\n\n\n2,\n3,x y z",
        b"1,\"a,b\"\n2,\"\"\n\n",
        b"1,\"say \"\"hi\"\"\"\n2,b\n",
        b"1,ab\"c\n",
        b"1,\"ab\"c\n",
        b"\"1\",b\n",
        b"1,\"a\nb\"\n",
        b"1,\"open\n",
        b"1,\"open",
        b"1,a,\n",
        b"1\n",
        b"1,\"a\\\"b\"\n",
        b"x,a\n",
        b"1,a\n2,b\n3,c",
        b",\n",
        b"1,\"\"\"\"\n",
    ];
    let key = |d: Option<Decoded>| {
        d.map(|d| {
            let at: Vec<_> = d
                .origins
                .iter()
                .map(|o| (o.start, o.len, o.line, o.row))
                .collect();
            (d.batch, at)
        })
    };
    for opts in [&CsvOptions::default(), &escaping] {
        for text in texts {
            let split = key(decoded(text, opts, true));
            let core = key(decoded(text, opts, false));
            assert_eq!(split, core, "{:?}", String::from_utf8_lossy(text));
        }
    }
    let d = fast(b"1,a b\n\n\n2,\n3,\"x y z\"").unwrap();
    assert_eq!(d.batch.num_rows(), 3);
    let at: Vec<_> = d.origins.iter().map(|o| (o.start, o.line, o.row)).collect();
    assert_eq!(at, [(0, 0, 0), (8, 3, 1), (11, 4, 2)]);
    assert_eq!(d.origins[2].len, 9);
}
