"""Linearizability checker for histories of single-key registers (RELIABILITY.md 4.2-4.4).

History format (one dict per event, as JSON lines in 4.2):

    {"p": 7, "type": "invoke", "f": "write", "key": "/k/1", "arg": "v-7-12", "t": 1234}
    {"p": 7, "type": "ok",     "f": "write", "key": "/k/1", "ver": 4, "t": 1299}
    {"p": 3, "type": "invoke", "f": "read",  "key": "/k/1", "t": 1250}
    {"p": 3, "type": "ok",     "f": "read",  "key": "/k/1", "out": "v-7-12", "ver": 4, "t": 1301}

- "t" is one monotonic clock (ns) for all processes.
- A completion of type "fail" means the operation definitely did not take effect: it is
  dropped. "info" means unknown: an info read is dropped; an info write may take effect
  at any point after its invocation, or never (return time = +infinity). A process
  whose operation ended in info must not be reused (use a fresh "p"); an invoke without
  a completion counts as info.
- out = None means the key did not exist (404). "ver" (optional, the znode version after
  the write / as read) is checked when present: every write that takes effect adds one.

The search is Wing & Gong's with Lowe's memoisation (the WGL of Knossos and Porcupine):
walk the time-ordered list of call/return entries; linearize a pending call if the
model allows it and the configuration (set of linearized ops, model state) is new;
backtrack when a return is reached whose op is not linearized yet. Keys are checked
independently (P-compositionality).
"""

import json
import time

INF = float("inf")


class Op:
    __slots__ = ("id", "f", "value", "ver", "inv", "ret", "p", "index")

    def __init__(self, f, value, inv, ret, ver=None, p=None, index=None):
        self.f, self.value, self.inv, self.ret, self.ver = f, value, inv, ret, ver
        self.p, self.index, self.id = p, index, None

    def __repr__(self):
        r = "inf" if self.ret == INF else self.ret
        v = "" if self.ver is None else " ver=%s" % self.ver
        return "<%s %r%s p=%s [%s, %s]>" % (self.f, self.value, v, self.p, self.inv, r)


def ops_from_events(events):
    """Pairs invoke/complete events by process; returns {key: [Op]} (fail ops and info
    reads dropped, info writes with ret=INF)."""
    pending = {}
    per_key = {}
    for n, e in enumerate(sorted(events, key=lambda e: e["t"])):
        p = e["p"]
        if e["type"] == "invoke":
            if p in pending:
                raise ValueError("process %r invoked twice without completing" % (p,))
            pending[p] = (n, e)
            continue
        if p not in pending:
            raise ValueError("completion without invoke for process %r: %r" % (p, e))
        n0, inv = pending.pop(p)
        if e["f"] != inv["f"] or e.get("key", inv["key"]) != inv["key"]:
            raise ValueError("completion %r does not match invoke %r" % (e, inv))
        _add(per_key, inv, e)
    for n0, inv in pending.values():
        _add(per_key, inv, None)
    return per_key


def _add(per_key, inv, done):
    typ = done["type"] if done else "info"
    f = inv["f"]
    if typ == "fail":
        return
    if f == "write":
        if typ == "ok":
            op = Op("write", inv["arg"], inv["t"], done["t"], ver=done.get("ver"), p=inv["p"])
        else:
            op = Op("write", inv["arg"], inv["t"], INF, p=inv["p"])
    elif f == "read":
        if typ != "ok":
            return
        op = Op("read", done.get("out"), inv["t"], done["t"], ver=done.get("ver"), p=inv["p"])
    else:
        raise ValueError("unknown f %r" % f)
    per_key.setdefault(inv["key"], []).append(op)


class Result:
    def __init__(self, key, valid, ops, explored=0, seconds=0.0, stuck=None, prefix=None):
        self.key, self.valid, self.ops = key, valid, ops
        self.explored, self.seconds = explored, seconds
        self.stuck = stuck      # the op whose return could not be reached, when invalid
        self.prefix = prefix    # the longest linearization found, when invalid

    def __bool__(self):
        return self.valid is True

    def __repr__(self):
        return "<key %s: %s, %d ops, %d configs, %.2fs%s>" % (
            self.key, {True: "linearizable", False: "NOT linearizable", None: "unknown"}[
                self.valid], len(self.ops), self.explored, self.seconds,
            "" if self.valid is not False else ", stuck at %r" % (self.stuck,))

    def explain(self, tail=12):
        if self.valid is not False:
            return repr(self)
        lines = [repr(self), "  longest linearization (last %d ops):" % tail]
        for op in (self.prefix or [])[-tail:]:
            lines.append("    %r" % (op,))
        lines.append("  then no pending op could be linearized before %r returned"
                     % (self.stuck,))
        return "\n".join(lines)


def _step(state, op):
    """Register model. state = (value, version or None). Returns the new state or None.

    Versions: a write with a known version must raise the version (gaps are allowed:
    unread indeterminate writes are pruned before the search, see prune_unread_info); a
    read must see exactly the version of the state."""
    value, ver = state
    if op.f == "write":
        nver = None
        if op.ver is not None:
            if ver is not None and op.ver <= ver:
                return None
            nver = op.ver
        return (op.value, nver)
    # read
    if op.value != value:
        return None
    if op.ver is not None:
        if ver is not None and op.ver != ver:
            return None
        return (value, op.ver)
    return state


def prune_unread_info(ops):
    """Drops indeterminate writes whose value no read returned, and gives the others the
    version a read saw.

    Sound for this model: with unique values, linearizing a write that no read observed
    can only make later reads fail until another write, and versions allow gaps, so a
    history is linearizable iff it is with those writes left out. This is what keeps
    histories with many timed-out writes cheap to check (each one otherwise doubles the
    configurations the search may visit)."""
    seen = {}
    for op in ops:
        if op.f == "read" and op.value is not None:
            seen.setdefault(op.value, op.ver)
    out = []
    for op in ops:
        if op.f == "write" and op.ret == INF:
            if op.value not in seen:
                continue
            if op.ver is None:
                op.ver = seen[op.value]
        out.append(op)
    return out


def check_register(ops, init=None, init_version=None, key=None, timeout=None, prune=True):
    """Checks one key's ops (a list of Op). Returns a Result (valid True/False, or None =
    unknown when the timeout in seconds ran out)."""
    t0 = time.monotonic()
    ops = prune_unread_info(list(ops)) if prune else list(ops)
    for i, op in enumerate(ops):
        op.id = i
    # Entries: (time, kind, op) with calls before returns at equal times (permissive).
    entries = []
    for op in ops:
        entries.append((op.inv, 0, op.id))
        if op.ret != INF:
            entries.append((op.ret, 1, op.id))
    entries.sort()
    n = len(entries)
    # Doubly linked list over entries; index n is the head sentinel.
    HEAD = n
    nxt = list(range(1, n + 1)) + [0]
    prv = [HEAD] + list(range(0, n - 1)) + [None]
    nxt[HEAD] = 0 if n else None
    if n:
        nxt[n - 1] = None
    kind = [k for (_, k, _) in entries]
    opof = [o for (_, _, o) in entries]
    match = {}
    for idx in range(n):
        if kind[idx] == 0:
            match.setdefault(opof[idx], [idx, None])[0] = idx
        else:
            match.setdefault(opof[idx], [None, None])[1] = idx
    remaining_ok = sum(1 for op in ops if op.ret != INF)

    def lift(call_idx):
        ret_idx = match[opof[call_idx]][1]
        for idx in (call_idx, ret_idx):
            if idx is None:
                continue
            p, q = prv[idx], nxt[idx]
            nxt[p] = q
            if q is not None:
                prv[q] = p

    def unlift(call_idx):
        ret_idx = match[opof[call_idx]][1]
        for idx in (ret_idx, call_idx):
            if idx is None:
                continue
            p, q = prv[idx], nxt[idx]
            nxt[p] = idx
            if q is not None:
                prv[q] = idx

    state = (init, init_version)
    linearized = 0
    cache = set()
    stack = []
    best = []
    stuck = None
    entry = nxt[HEAD]
    explored = 0
    while remaining_ok > 0:
        if entry is None:
            raise AssertionError("internal: walked off the entry list")
        if kind[entry] == 0:
            op = ops[opof[entry]]
            new_state = _step(state, op)
            if new_state is not None:
                new_lin = linearized | (1 << op.id)
                cfg = (new_lin, new_state)
                if cfg not in cache:
                    cache.add(cfg)
                    explored += 1
                    if timeout is not None and explored % 2048 == 0 \
                            and time.monotonic() - t0 > timeout:
                        return Result(key, None, ops, explored, time.monotonic() - t0)
                    stack.append((entry, state))
                    state, linearized = new_state, new_lin
                    if op.ret != INF:
                        remaining_ok -= 1
                    lift(entry)
                    if len(stack) > len(best):
                        best = [ops[opof[e]] for e, _ in stack]
                    entry = nxt[HEAD]
                    continue
            entry = nxt[entry]
        else:
            if stuck is None or len(stack) >= len(best) - 1:
                stuck = ops[opof[entry]]
            if not stack:
                return Result(key, False, ops, explored, time.monotonic() - t0,
                              stuck=stuck, prefix=best)
            entry, state = stack.pop()
            op = ops[opof[entry]]
            linearized &= ~(1 << op.id)
            if op.ret != INF:
                remaining_ok += 1
            unlift(entry)
            entry = nxt[entry]
    return Result(key, True, ops, explored, time.monotonic() - t0)


def check_history(events, init=None, init_version=None, timeout_per_key=60.0):
    """Checks a whole history (list of event dicts); returns {key: Result}. init may be a
    dict {key: (value, version)} or one value for every key."""
    per_key = ops_from_events(events)
    out = {}
    for key in sorted(per_key):
        if isinstance(init, dict):
            iv, ivv = init.get(key, (None, None))
        else:
            iv, ivv = init, init_version
        out[key] = check_register(per_key[key], iv, ivv, key=key, timeout=timeout_per_key)
    return out


def summarize(results):
    bad = [r for r in results.values() if r.valid is False]
    unknown = [r for r in results.values() if r.valid is None]
    return bad, unknown


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def dump_jsonl(events, path):
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True) + "\n")


class History:
    """Thread-safe recorder of events with one monotonic clock."""

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        self.events = []
        self._next_p = 0

    def new_process(self):
        with self._lock:
            self._next_p += 1
            return self._next_p

    def invoke(self, p, f, key, arg=None):
        e = {"p": p, "type": "invoke", "f": f, "key": key, "t": time.monotonic_ns()}
        if arg is not None:
            e["arg"] = arg
        with self._lock:
            self.events.append(e)
        return e

    def complete(self, p, typ, f, key, **fields):
        e = {"p": p, "type": typ, "f": f, "key": key, "t": time.monotonic_ns()}
        e.update(fields)
        with self._lock:
            self.events.append(e)
        return e


if __name__ == "__main__":
    import sys
    res = check_history(load_jsonl(sys.argv[1]))
    bad, unknown = summarize(res)
    for r in res.values():
        print(r.explain() if r.valid is False else repr(r))
    sys.exit(1 if bad or unknown else 0)
