//! The share as it was: at the newest clock it is the live store exactly
//! (heads, conflicts and deletes included); before, it is what was written
//! by then.

mod common;

use std::sync::Arc;

use store::{AsOf, Hlc, KvStore, Op};

#[test]
fn as_of_now_is_the_live_store_and_as_of_then_is_the_past() {
    let a = Arc::new(common::mem_owner());
    let b = common::mem_peer(&a);
    common::sync(&a, &b);
    for i in 0..30u32 {
        // Both write some of the same keys without seeing each other
        // (conflicts), delete some, and meet every few rounds.
        a.write(vec![Op::put(format!("k{}", i % 7), format!("a{i}"))]).unwrap();
        b.write(vec![
            Op::put(format!("k{}", i % 5), format!("b{i}")),
            Op::delete(format!("k{}", i % 3)),
        ])
        .unwrap();
        if i % 4 == 0 {
            common::sync(&b, &a);
            common::sync(&a, &b);
        }
    }
    common::sync(&b, &a);
    let live = a.scan_heads(b"").unwrap();
    assert!(live.iter().any(|(_, hs)| hs.len() > 1), "the run made a conflict");
    let now = AsOf::new(a.clone(), Hlc(u64::MAX)).unwrap();
    assert_eq!(now.scan_heads(b"").unwrap(), live);
    assert_eq!(now.scan(b"k").unwrap(), a.scan(b"k").unwrap());

    // Before a later write, its key shows the earlier value.
    let before = store::hlc::wall_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.write(vec![Op::put("k1", "later")]).unwrap();
    let then = AsOf::new(a.clone(), Hlc::new(before, u16::MAX)).unwrap();
    assert_eq!(then.get(b"k1").unwrap(), now.get(b"k1").unwrap());
    assert_eq!(a.get(b"k1").unwrap().as_deref(), Some(&b"later"[..]));
    assert!(then.write_batches(vec![vec![Op::put("x", "y")]], true).is_err());
}

#[test]
fn a_store_from_a_snapshot_shows_its_past_from_the_snapshot_on() {
    let a = Arc::new(common::mem_owner());
    let early = store::hlc::wall_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    for i in 0..20u32 {
        a.write(vec![
            Op::put(format!("k{}", i % 3), format!("v{i}")),
            Op::put("x", format!("{i}")),
        ])
        .unwrap();
    }
    let c = Arc::new(common::mem_peer(&a));
    c.install_snapshot(&a.snapshot().unwrap()).unwrap();
    let now = AsOf::new(c.clone(), Hlc(u64::MAX)).unwrap();
    assert_eq!(now.scan_heads(b"").unwrap(), c.scan_heads(b"").unwrap());
    c.write(vec![Op::put("k1", "after")]).unwrap();
    let now = AsOf::new(c.clone(), Hlc(u64::MAX)).unwrap();
    assert_eq!(now.scan_heads(b"").unwrap(), c.scan_heads(b"").unwrap());
    assert!(AsOf::new(c.clone(), Hlc::new(early, 0)).is_err(), "before the snapshot");
}
