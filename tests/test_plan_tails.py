"""The kernel's quick suffix test (bpf/file.bpf.c plan_tail): every path a suffix can match
ends in a pair of bytes that has the suffix's access classes, and most paths do not."""
from services.probe.plan_maps import tail_entries, trie_entries
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
