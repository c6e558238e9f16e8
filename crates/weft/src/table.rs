//! The tables client commands print: a header, then one row per item, columns padded to
//! their widest cell.

pub fn print<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let rows: Vec<&[String]> = rows.iter().map(|row| &row[..]).collect();
    print_rows(&header, &rows);
}

/// [`print`] for a number of columns known only at run time.
pub fn print_rows<R: AsRef<[String]>>(header: &[&str], rows: &[R]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
}
