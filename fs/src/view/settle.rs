//! Settling: the incremental rules that turn changed inputs into the shown
//! tree (place, cycles, kept, reachable, names, copies; see the module
//! comment of `view.rs`), each following a change only as far as it goes.

use super::*;

impl View {
    /// Applies the rules to every node whose inputs changed since the last call.
    pub fn settle(&mut self) -> Delta {
        let touched: Vec<NodeId> = std::mem::take(&mut self.touched).into_iter().collect();
        let content: Vec<NodeId> = std::mem::take(&mut self.content).into_iter().collect();
        let mut relink: Vec<NodeId> = Vec::new();
        let mut kept_work: Vec<NodeId> = Vec::new();
        let mut chain_work: Vec<NodeId> = Vec::new();
        let mut name_work: BTreeSet<NodeId> = BTreeSet::new();
        let mut copy_work: BTreeSet<NodeId> = content.iter().copied().collect();

        // The node's own state.
        for &x in &touched {
            self.visits += 1;
            if x == NodeId::ROOT {
                continue;
            }
            let Some(r) = self.recs.get(&x) else { continue };
            let win = r
                .places
                .iter()
                .enumerate()
                .max_by_key(|(_, p)| self.rank(x, p))
                .map(|(i, _)| i as u32);
            let r = self.recs.get_mut(&x).expect("present");
            let (old_raw, old_exists, old_kind) = (r.d.raw_parent, r.d.exists, r.d.kind);
            r.d.win = win;
            let exists = r.exists();
            r.d.exists = exists;
            r.d.kind = r.kind();
            let (raw, own) = match r.place().filter(|_| exists) {
                None => (None, false),
                Some(p) => (
                    p.parent,
                    p.parent.is_some()
                        && (!p.deleted
                            || (r.d.kind != Some(Kind::Dir)
                                && r.versions.iter().any(|v| !p.seen.contains(&v.version)))),
                ),
            };
            r.d.raw_parent = raw;
            r.d.own = own;
            // A cycle member's rank decides which member is re-homed: look again.
            if r.d.raw_parent != old_raw || self.cycle_of.contains_key(&x) {
                relink.push(x);
            }
            if exists != old_exists || r.d.kind != old_kind {
                chain_work.extend(self.kids.get(&x).into_iter().flatten().copied());
            }
            kept_work.push(x);
            chain_work.push(x);
            name_work.insert(x);
            copy_work.insert(x);
        }

        // Cycles: dissolve the ones a changed node was in, then look again from
        // every node that was in one or changed its link.
        let mut recheck: BTreeSet<NodeId> = relink.iter().copied().collect();
        let mut found: Vec<NodeId> = Vec::new();
        for x in &relink {
            if let Some(rep) = self.cycle_of.get(x).copied() {
                for m in self.cycles.remove(&rep).unwrap_or_default() {
                    self.cycle_of.remove(&m);
                    recheck.insert(m);
                }
            }
        }
        for &y in &recheck {
            if self.cycle_of.contains_key(&y) {
                continue;
            }
            if let Some(members) = self.find_cycle(y) {
                let rep = *members
                    .iter()
                    .max_by_key(|m| {
                        let r = &self.recs[*m];
                        self.rank(**m, r.place().expect("in a cycle"))
                    })
                    .expect("non-empty cycle");
                for m in &members {
                    self.cycle_of.insert(*m, rep);
                }
                found.extend(&members);
                self.cycles.insert(rep, members);
            }
        }

        // Links.
        recheck.extend(found);
        for &y in &recheck {
            self.visits += 1;
            let Some(r) = self.recs.get(&y) else { continue };
            let link = if self.cycle_of.get(&y) == Some(&y) {
                Some(NodeId::ROOT)
            } else {
                r.d.raw_parent
            };
            let old = r.d.link;
            if link == old {
                continue;
            }
            self.recs.get_mut(&y).expect("present").d.link = link;
            if let Some(p) = old
                && let Some(k) = self.kids.get_mut(&p)
            {
                k.remove(&y);
                if k.is_empty() {
                    self.kids.remove(&p);
                }
            }
            if let Some(p) = link {
                self.kids.entry(p).or_default().insert(y);
            }
            kept_work.push(y);
            chain_work.push(y);
            name_work.insert(y);
        }

        // Kept, bottom-up.
        while let Some(x) = kept_work.pop() {
            self.visits += 1;
            if x == NodeId::ROOT {
                continue;
            }
            let kids_kept = self.kept_kids.get(&x).copied().unwrap_or(0);
            let Some(r) = self.recs.get_mut(&x) else { continue };
            let kept = r.exists() && (r.d.own || (r.kind() == Some(Kind::Dir) && kids_kept > 0));
            let contrib = if kept { r.d.link } else { None };
            if kept != r.d.kept {
                r.d.kept = kept;
                name_work.insert(x);
            }
            if contrib != r.d.contrib {
                let old = std::mem::replace(&mut r.d.contrib, contrib);
                if let Some(p) = old {
                    let n = self.kept_kids.get_mut(&p).expect("counted");
                    *n -= 1;
                    if *n == 0 {
                        self.kept_kids.remove(&p);
                    }
                    kept_work.push(p);
                }
                if let Some(p) = contrib {
                    *self.kept_kids.entry(p).or_default() += 1;
                    kept_work.push(p);
                }
            }
        }

        // Reachable, top-down.
        while let Some(x) = chain_work.pop() {
            self.visits += 1;
            if x == NodeId::ROOT {
                continue;
            }
            let Some(r) = self.recs.get(&x) else { continue };
            let ok = r.exists()
                && match r.d.link {
                    None => false,
                    Some(NodeId::ROOT) => true,
                    Some(p) => self
                        .recs
                        .get(&p)
                        .is_some_and(|pr| pr.exists() && pr.kind() == Some(Kind::Dir) && pr.d.chain_ok),
                };
            if ok != r.d.chain_ok {
                self.recs.get_mut(&x).expect("present").d.chain_ok = ok;
                name_work.insert(x);
                chain_work.extend(self.kids.get(&x).into_iter().flatten().copied());
            }
        }

        // Names.
        let mut ev = Vec::new();
        for x in name_work {
            self.visits += 1;
            let Some(r) = self.recs.get(&x) else { continue };
            let want = (r.exists() && r.d.chain_ok && r.d.kept).then(|| {
                let p = r.place().expect("exists");
                Claim {
                    dir: r.d.link.expect("reachable"),
                    name: tree::shown_name(&p.name, x).into_boxed_slice(),
                    hlc: p.hlc,
                    author: p.author,
                }
            });
            if want != r.d.claim {
                let old = std::mem::replace(&mut self.recs.get_mut(&x).expect("present").d.claim, want.clone());
                if let Some(c) = old {
                    self.names.remove_own(x, &c, &self.authors.list, &mut ev);
                }
                if let Some(c) = want {
                    self.names.add_own(x, &c, &self.authors.list, &mut ev);
                }
                // Its claim changed: where it is shown may have too, even
                // where no slot changed holder, and its copies go with it.
                copy_work.insert(x);
                ev.push(Event {
                    dir: NodeId::ROOT,
                    name: Box::default(),
                    old: Some(x),
                    new: None,
                });
            }
        }
        let mut delta = Delta::default();
        let mut moved: BTreeSet<NodeId> = BTreeSet::new();
        for id in self.apply_events(&ev, &mut delta) {
            copy_work.insert(id);
            moved.insert(id);
        }

        // Copies of content heads, for files whose heads or shown name changed.
        let mut ev = Vec::new();
        for x in copy_work {
            self.visits += 1;
            moved.extend(self.fix_copies(x, &mut ev));
        }
        moved.extend(self.apply_events(&ev, &mut delta));
        delta.hidden = moved.into_iter().filter(|id| !self.is_shown(*id)).collect();
        delta.nodes = content;
        if self.entries.list.len() > 4 * self.recs.len() + 4096 {
            self.renumber_entries();
        }
        delta
    }

    /// Numbers again only the entries some head still names: every written
    /// window and remote change adds one, and most are superseded later.
    fn renumber_entries(&mut self) {
        let old = std::mem::replace(&mut self.entries, Table::new());
        for r in self.recs.values_mut() {
            for p in r.places.iter_mut() {
                p.entry = self.entries.no(old.get(p.entry));
            }
            for v in r.versions.iter_mut() {
                v.entry = self.entries.no(old.get(v.entry));
            }
        }
    }

    /// Walks raw parents up from `y`; the members of the cycle through `y`, if any.
    fn find_cycle(&mut self, y: NodeId) -> Option<Vec<NodeId>> {
        let mut path = vec![y];
        let mut seen = HashSet::from([y]);
        let mut cur = y;
        loop {
            self.visits += 1;
            let p = self.recs.get(&cur)?.d.raw_parent?;
            if p == y {
                return Some(path);
            }
            if p == NodeId::ROOT || self.cycle_of.contains_key(&p) || !seen.insert(p) {
                return None;
            }
            path.push(p);
            cur = p;
        }
    }

    /// Whether `x` is shown now, read from the slots of its claim's
    /// directory: under its own name (false), else its clash name (true).
    fn display(&self, x: NodeId) -> Option<bool> {
        let c = self.recs.get(&x)?.d.claim.as_ref()?;
        if self.names.get(c.dir, &c.name) == Some(x) {
            return Some(false);
        }
        let clash = tree::clash_name(&c.name, &self.authors.get(c.author), x);
        (self.names.get(c.dir, &clash) == Some(x)).then_some(true)
    }

    /// Records changed holders; returns the nodes and copies whose shown
    /// place changed.
    fn apply_events(&mut self, ev: &[Event], delta: &mut Delta) -> Vec<NodeId> {
        let mut who: BTreeSet<NodeId> = BTreeSet::new();
        for e in ev {
            if !e.name.is_empty() {
                delta.names.push((e.dir, e.name.clone()));
            }
            who.extend(e.old);
            who.extend(e.new);
        }
        let mut moved = Vec::new();
        for id in who {
            if self.recs.contains_key(&id) {
                let now = self.display(id);
                let r = self.recs.get_mut(&id).expect("present");
                if r.d.shown != now {
                    r.d.shown = now;
                    moved.push(id);
                }
            } else if let Some(c) = self.copies.get(&id) {
                let now = self
                    .recs
                    .get(&c.copy.of)
                    .and_then(|r| r.d.copies.iter().find(|k| k.0 == id))
                    .filter(|k| self.names.get(k.1, &k.2) == Some(id))
                    .map(|k| (k.1, k.2.clone()));
                let c = self.copies.get_mut(&id).expect("present");
                if c.shown != now {
                    c.shown = now;
                    moved.push(id);
                }
            }
        }
        moved
    }

    /// Brings `x`'s copy claims in line with its content heads and shown name;
    /// returns the copies it dropped.
    fn fix_copies(&mut self, x: NodeId, ev: &mut Vec<Event>) -> Vec<NodeId> {
        let Some(r) = self.recs.get(&x) else { return Vec::new() };
        let mut want: Vec<(NodeId, NodeId, Box<[u8]>, DataHead)> = Vec::new();
        if let (Some((dir, name)), Some(Kind::File), true) = (self.place_of(x), r.kind(), r.versions.len() > 1) {
            let w = self.winner(&r.versions).expect("several heads");
            for v in r.versions.iter().filter(|v| *v != w) {
                let h = self.data_head(v);
                let (cid, cname) = tree::copy_of(x, &name, &h);
                want.push((cid, dir, cname.into_boxed_slice(), h));
            }
        }
        let have = &r.d.copies;
        if have.len() == want.len()
            && have
                .iter()
                .zip(&want)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2)
        {
            for (cid, _, _, head) in want {
                if let Some(c) = self.copies.get_mut(&cid) {
                    c.copy.head = head;
                }
            }
            return Vec::new();
        }
        let have = have.to_vec();
        let dropped = have
            .iter()
            .map(|c| c.0)
            .filter(|c| !want.iter().any(|w| w.0 == *c))
            .collect();
        for (cid, dir, name) in &have {
            self.copies.remove(cid);
            self.names.remove_copy(*dir, name, *cid, ev);
        }
        self.recs.get_mut(&x).expect("present").d.copies = want
            .iter()
            .map(|(cid, dir, name, _)| (*cid, *dir, name.clone()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        for (cid, dir, name, head) in want {
            self.copies.insert(
                cid,
                CopyRec {
                    copy: Copy { of: x, head },
                    shown: None,
                },
            );
            self.names.add_copy(dir, &name, cid, ev);
            // Re-added in place: its slot may keep its holder, and no event says so.
            ev.push(Event {
                dir,
                name: Box::default(),
                old: None,
                new: Some(cid),
            });
        }
        dropped
    }
}
