"""The kernel's quick tests before its tries (bpf/file.bpf.c): every path a suffix can match ends
in a pair of bytes that has the suffix's access classes (plan_tail), every open path a prefix or
exact path can match starts with a pair that has its classes (plan_open_head), and most paths do not."""
from services.probe.plan_maps import open_head_entries, tail_entries, trie_entries
from shared.filterplan import FilterPlan, Pattern

NUMBERS = {"open": 4, "unlink": 5}


def tail_of(path: bytes) -> int:
    """The key the kernel builds from a path's last two bytes."""
    return path[-1] | (path[-2] << 8 if len(path) >= 2 else 0)


def plan_of(*patterns: Pattern) -> FilterPlan:
    return FilterPlan(kinds=("open", "unlink"), patterns=patterns)


def test_a_path_ending_in_a_suffix_passes_and_others_mostly_do_not():
    plan = plan_of(Pattern("open", "suffix", "/.bashrc", 2), Pattern("open", "suffix", "shadow", 1),
                   Pattern("unlink", "suffix", ".log", 7))
    _, suffix = trie_entries(plan, NUMBERS)
    tails = tail_entries(suffix)
    assert tails == {tail_of(b"rc"): 2, tail_of(b"ow"): 1, tail_of(b"og"): 7}
    for path, cls in ((b"/root/.bashrc", 2), (b"/etc/shadow", 1), (b"/etc/gshadow", 1), (b"/var/log/x.log", 4)):
        assert tails.get(tail_of(path), 0) & cls, path
    assert not tails.get(tail_of(b"/usr/share/nginx/html/index.html"), 0)
    assert not tails.get(tail_of(b"/etc/shadow"), 0) & 2  # shadow is wanted for reads only


def test_short_suffixes_stand_for_every_pair_they_can_end():
    _, suffix = trie_entries(plan_of(Pattern("open", "suffix", "~", 1)), NUMBERS)
    tails = tail_entries(suffix)
    assert len(tails) == 256 and all(tails[tail_of(bytes([b]) + b"~")] == 1 for b in range(256))
    assert tails[tail_of(b"~")] == 1  # a one-byte path


def head_of(path: bytes) -> int:
    """The key the kernel builds from an absolute path's two bytes after the '/' (its NUL, then
    whatever follows it, for "/")."""
    padded = path + b"\0\xaa"
    return padded[1] | padded[2] << 8


def test_an_open_path_under_a_prefix_or_exact_path_passes_and_others_mostly_do_not():
    plan = plan_of(Pattern("open", "prefix", "/etc/cron.d/", 2), Pattern("open", "exact", "/etc/shadow", 1),
                   Pattern("open", "prefix", "/dev/", 7), Pattern("unlink", "prefix", "/usr/bin/", 7))
    prefix, _ = trie_entries(plan, NUMBERS)
    heads = open_head_entries(prefix, NUMBERS["open"])
    assert heads == {head_of(b"/et"): 3, head_of(b"/de"): 7}  # unlink's prefix is not an open's
    for path, cls in ((b"/etc/cron.d/x", 2), (b"/etc/shadow", 1), (b"/dev/mem", 4)):
        assert heads.get(head_of(path), 0) & cls, path
    for path in (b"/usr/share/nginx/html/index.html", b"/tmp/f", b"/usr/bin/x", b"/"):
        assert not heads.get(head_of(path), 0), path


def test_short_prefixes_and_exact_names_stand_for_every_pair_they_can_start():
    prefix, _ = trie_entries(plan_of(Pattern("open", "prefix", "/t", 2), Pattern("open", "exact", "/x", 1)), NUMBERS)
    heads = open_head_entries(prefix, NUMBERS["open"])
    assert all(heads[head_of(b"/t" + bytes([b]))] == 2 for b in range(256))
    assert heads[head_of(b"/x")] == 1 and not heads.get(head_of(b"/xy"), 0)  # "/x" exact: "x" then its NUL
    for root in (Pattern("open", "prefix", "/", 1), Pattern("open", "exact", "/", 1)):
        prefix, _ = trie_entries(plan_of(root), NUMBERS)
        heads = open_head_entries(prefix, NUMBERS["open"])
        assert heads[head_of(b"/")] == 1
        if root.match == "prefix":
            assert len(heads) == 65536
