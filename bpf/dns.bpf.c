// DNS: queries a socket sends to port 53 and the answers it receives from
// port 53, UDP and TCP, whatever syscall moved them (send*/recv*/read/write,
// sendmmsg, io_uring). Two cgroup_skb programs on the cgroup-v2 root
// (attached by services/probe/dns_attach.py) see every inet packet of every
// socket at the IP layer; they cost a few loads per packet and leave the
// syscall path untouched, unlike programs on read/write that would run for
// every file read of the node. Only the client side is reported (egress to
// port 53, ingress from port 53): a local resolver's own traffic is not
// reported twice.
//
// Attribution: the socket's cgroup (bpf_skb_cgroup_id). The sender's pid is
// known on egress; an answer arrives in softirq context (any task), so it
// carries pid 0 and user space pairs it with its query.
//
// The payload (at most DNS_PAYLOAD_SZ bytes, TCP's 2-byte length included)
// is copied as is: names are decoded in user space (services/enricher/dns.py).

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define DNS_PORT 53

// 0 when the packet's own headers, read in place, show it is no DNS packet of
// interest; 1 when it may be one (or its headers are not all in the linear part):
// most packets of the node leave here without a helper call.
static __always_inline int dns_maybe(struct __sk_buff *skb, u32 dir)
{
    u8 *d = (u8 *)(long)skb->data, *end = (u8 *)(long)skb->data_end;
    if (d + 40 > end)
        return 1;
    u32 l4;
    u8 proto;
    if ((d[0] >> 4) == 4) {
        l4 = (d[0] & 0xf) * 4;
        proto = d[9];
    } else if ((d[0] >> 4) == 6) {
        l4 = 40;
        proto = d[6];
    } else {
        return 0;
    }
    if (proto != IPPROTO_UDP_ && proto != IPPROTO_TCP_)
        return 0;
    if (l4 < 20 || l4 > 60)
        return 1;
    u8 *ports = d + l4;
    if (ports + 4 > end)
        return 1;
    u16 port = dir == 0 ? ((u16)ports[2] << 8 | ports[3]) : ((u16)ports[0] << 8 | ports[1]);
    return port == DNS_PORT;
}

static __always_inline int dns_skb(struct __sk_buff *skb, u32 dir)
{
    if (!dns_maybe(skb, dir))
        return 1;
    u8 vh = 0;
    if (bpf_skb_load_bytes(skb, 0, &vh, 1) < 0)
        return 1;
    u32 l4, family, src, dst;
    u8 proto = 0;
    if ((vh >> 4) == 4) {
        l4 = (vh & 0xf) * 4;
        if (l4 < 20 || bpf_skb_load_bytes(skb, 9, &proto, 1) < 0)
            return 1;
        family = AF_INET_;
        src = 12;
        dst = 16;
    } else if ((vh >> 4) == 6) {
        l4 = 40;  // extension headers are not followed: DNS packets carry none
        if (bpf_skb_load_bytes(skb, 6, &proto, 1) < 0)
            return 1;
        family = AF_INET6_;
        src = 8;
        dst = 24;
    } else {
        return 1;
    }
    if (proto != IPPROTO_UDP_ && proto != IPPROTO_TCP_)
        return 1;
    u16 ports[2] = {};
    if (bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
        return 1;
    u16 sport = bpf_ntohs(ports[0]), dport = bpf_ntohs(ports[1]);
    if ((dir == 0 ? dport : sport) != DNS_PORT)
        return 1;
    u32 off = l4 + 8;
    if (proto == IPPROTO_TCP_) {
        u8 doff = 0;
        if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1) < 0)
            return 1;
        off = l4 + (doff >> 4) * 4;
    }
    if (skb->len <= off)
        return 1;  // no payload: TCP handshake and ACKs
    u32 kind = K_DNS;
    u8 *on = kind_on.lookup(&kind);
    if (!on || !*on) {
        u64 *c = filtered.lookup(&kind);
        if (c)
            *c += 1;
        return 1;
    }
    u64 cg = bpf_skb_cgroup_id(skb);
    if (dir == 0) {
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        if (excluded.lookup(&tgid))
            return 1;
    }
    struct ev_dns *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost(K_DNS);
        return 1;
    }
    if (dir == 0) {
        fill_head(&e->h, K_DNS);
    } else {  // softirq: the current task is not the receiver
        __builtin_memset(&e->h, 0, sizeof(e->h));
        e->h.ts = bpf_ktime_get_boot_ns();
        e->h.kind = K_DNS;
        count_cgroup(cg, K_DNS);
    }
    e->h.cgroup_id = cg;
    u32 len = skb->len - off;  // > 0
    u32 n = len > DNS_PAYLOAD_SZ ? DNS_PAYLOAD_SZ : len;
    n = ((n - 1) & (DNS_PAYLOAD_SZ - 1)) + 1;  // the same value, in a range the verifier can see: 1..512
    e->a[0] = len;
    e->a[1] = n;
    e->a[2] = dir;
    e->a[3] = family;
    e->a[4] = proto;
    e->a[5] = dir == 0 ? ((u32)sport << 16 | dport) : ((u32)dport << 16 | sport);
    __builtin_memset(e->laddr, 0, 32);
    u32 la = dir == 0 ? src : dst, ra = dir == 0 ? dst : src;
    if (family == AF_INET_) {
        bpf_skb_load_bytes(skb, la, e->laddr, 4);
        bpf_skb_load_bytes(skb, ra, e->raddr, 4);
    } else {
        bpf_skb_load_bytes(skb, la, e->laddr, 16);
        bpf_skb_load_bytes(skb, ra, e->raddr, 16);
    }
    if (bpf_skb_load_bytes(skb, off, e->data, n) < 0)
        e->a[1] = 0;
    ev_submit(e);
    return 1;  // cgroup_skb: 1 lets the packet through, always
}

int dns_egress(struct __sk_buff *skb)
{
    return dns_skb(skb, 0);
}

int dns_ingress(struct __sk_buff *skb)
{
    return dns_skb(skb, 1);
}
