//! Reading order: upright boxes `[x0, y0, x1, y1]` in, the order to read them in out: top to
//! bottom, left to right, and a column read to its end before the next one starts.
//!
//! Recursive cuts through the white space: bands between horizontal gaps, then columns between
//! vertical gaps. Bands that share a column gap (a two-column body, line by line) are joined
//! again before they are split into columns, so a body is not read across both columns row by
//! row; a line spanning the gap (a heading) stays a band of its own.

type Bbox = [f32; 4];

/// A run of bands read as one block, with the column gaps they share.
type Block = (Vec<usize>, Vec<(f32, f32)>);

/// The order in which to read `boxes` (indices into it).
pub fn reading_order(boxes: &[Bbox]) -> Vec<usize> {
    let all: Vec<usize> = (0..boxes.len()).collect();
    let line_h = median(boxes.iter().map(|b| b[3] - b[1]).collect()).max(1.0);
    let mut out = Vec::with_capacity(boxes.len());
    order_group(boxes, all, line_h, &mut out, 0);
    out
}

fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// Gaps in the projection of `items` on one axis (`lo`, `hi` the box sides): the groups
/// between gaps wider than `min_gap`, in order, and the gaps themselves.
fn split(boxes: &[Bbox], items: &[usize], lo: usize, hi: usize, min_gap: f32) -> Vec<Vec<usize>> {
    let mut sorted = items.to_vec();
    sorted.sort_by(|&a, &b| boxes[a][lo].total_cmp(&boxes[b][lo]));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut reach = f32::MIN;
    for i in sorted {
        if groups.is_empty() || boxes[i][lo] - reach > min_gap {
            groups.push(Vec::new());
        }
        reach = reach.max(boxes[i][hi]);
        groups.last_mut().expect("a group was pushed").push(i);
    }
    groups
}

/// Where a group's columns part: the vertical gaps between its columns, if it has any.
fn column_gaps(boxes: &[Bbox], items: &[usize], min_gap: f32) -> Vec<(f32, f32)> {
    let cols = split(boxes, items, 0, 2, min_gap);
    let right = |g: &Vec<usize>| g.iter().map(|&i| boxes[i][2]).fold(f32::MIN, f32::max);
    let left = |g: &Vec<usize>| g.iter().map(|&i| boxes[i][0]).fold(f32::MAX, f32::min);
    cols.windows(2)
        .map(|w| (right(&w[0]), left(&w[1])))
        .collect()
}

/// Whether a band fits beside the column gaps of the bands above it: no box of it crosses one.
fn fits(boxes: &[Bbox], items: &[usize], gaps: &[(f32, f32)]) -> bool {
    items.iter().all(|&i| {
        gaps.iter()
            .all(|&(g0, g1)| boxes[i][2] <= g1 || boxes[i][0] >= g0)
    })
}

fn order_group(boxes: &[Bbox], items: Vec<usize>, line_h: f32, out: &mut Vec<usize>, depth: u32) {
    if items.len() <= 1 || depth > 32 {
        out.extend(rows(boxes, items));
        return;
    }
    let col_gap = line_h;
    let cols = split(boxes, &items, 0, 2, col_gap);
    if cols.len() > 1 {
        for c in cols {
            order_group(boxes, c, line_h, out, depth + 1);
        }
        return;
    }
    let bands = split(boxes, &items, 1, 3, 0.0);
    if bands.len() <= 1 {
        out.extend(rows(boxes, items));
        return;
    }
    // Join runs of bands that share column gaps.
    let mut joined: Vec<Block> = Vec::new();
    for band in bands {
        let gaps = column_gaps(boxes, &band, col_gap);
        match joined.last_mut() {
            Some((prev, pg)) if !pg.is_empty() && fits(boxes, &band, pg) => {
                prev.extend(band);
                if !gaps.is_empty() {
                    *pg = column_gaps(boxes, prev, col_gap);
                }
            }
            _ => joined.push((band, gaps)),
        }
    }
    if joined.len() == 1 && joined[0].1.is_empty() {
        out.extend(rows(boxes, joined.remove(0).0));
        return;
    }
    for (band, _) in joined {
        order_group(boxes, band, line_h, out, depth + 1);
    }
}

/// Boxes of one column: rows top to bottom (boxes whose middles are within half a line of a
/// row's first box), each row left to right.
fn rows(boxes: &[Bbox], mut items: Vec<usize>) -> Vec<usize> {
    let mid = |i: usize| (boxes[i][1] + boxes[i][3]) / 2.0;
    items.sort_by(|&a, &b| mid(a).total_cmp(&mid(b)));
    let mut out = Vec::with_capacity(items.len());
    let mut row: Vec<usize> = Vec::new();
    for i in items {
        if let Some(&first) = row.first() {
            let h = (boxes[first][3] - boxes[first][1]).min(boxes[i][3] - boxes[i][1]);
            if mid(i) - mid(first) > h / 2.0 {
                row.sort_by(|&a, &b| boxes[a][0].total_cmp(&boxes[b][0]));
                out.append(&mut row);
            }
        }
        row.push(i);
    }
    row.sort_by(|&a, &b| boxes[a][0].total_cmp(&boxes[b][0]));
    out.append(&mut row);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_columns_are_read_one_after_the_other() {
        // A heading across the page, two columns of three lines, a footer across the page.
        let mut boxes = vec![[10.0, 10.0, 390.0, 30.0]];
        for row in 0..3 {
            let y = 50.0 + row as f32 * 25.0;
            boxes.push([10.0, y, 180.0, y + 18.0]); // left column
            boxes.push([220.0, y + 2.0, 390.0, y + 20.0]); // right column, a little lower
        }
        boxes.push([10.0, 160.0, 390.0, 180.0]);
        let order = reading_order(&boxes);
        assert_eq!(order, vec![0, 1, 3, 5, 2, 4, 6, 7]);
    }

    #[test]
    fn a_shorter_right_column_still_ends_before_the_footer() {
        let boxes = vec![
            [10.0, 50.0, 180.0, 68.0],
            [220.0, 50.0, 390.0, 68.0],
            [10.0, 75.0, 180.0, 93.0],
            [10.0, 100.0, 180.0, 118.0],
        ];
        assert_eq!(reading_order(&boxes), vec![0, 2, 3, 1]);
    }

    #[test]
    fn words_split_on_one_line_read_left_to_right() {
        let boxes = vec![
            [200.0, 12.0, 300.0, 30.0],
            [10.0, 10.0, 120.0, 28.0],
            [10.0, 40.0, 300.0, 58.0],
        ];
        assert_eq!(reading_order(&boxes), vec![1, 0, 2]);
    }
}
