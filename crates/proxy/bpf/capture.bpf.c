// SPDX-License-Identifier: Apache-2.0
//
// Weft's eBPF capture, attached to the cgroup (v2) of one workload: its app and its proxy.
//
// connect4 and connect6: an outbound TCP connect by the app (any user but the proxy's and
// the excluded ones) to an address outside loopback and the excluded networks and ports is
// sent to the proxy's outbound listener instead, and the address it asked for is kept
// under the socket's cookie. No NAT, no conntrack: the kernel connects
// the socket to the listener itself. DNS over TCP (port 53) goes to the proxy's DNS
// listener when it has one (UDP DNS is left to the iptables rule that sends it there).
//
// sockops: once that connection is established, its original destination is filed under
// the app socket's own address (127.0.0.1 and its port), which is what the proxy sees as
// the peer of the connection it accepted; the proxy reads it there (map `origins`). Every
// established TCP connection with both ends on loopback (app to outbound proxy, inbound
// proxy to app, app to DNS) is put in the sockhash `local_sockets`, both of its sockets.
//
// sk_msg (on `local_sockets`): data a local socket sends goes straight into the receive
// queue of the socket at the other end, when that one is in the map too, skipping the
// TCP/IP stack for the local hop. Only sockets of this cgroup are in the map, so the
// proxy must run in the workload's cgroup for its side of the hop to be there (as a pod's
// sidecar does); a hop with one end outside takes the ordinary path.
//
// Built by scripts/build-bpf.sh into capture.bpf.o next to this file (committed, so a
// machine with only the Rust toolchain builds Weft); a test fails when the object is older
// than this source.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Set by the loader before the programs are loaded.
volatile const __u32 proxy_uid = 0;
volatile const __u32 proxy_gid = 0xffffffff; // none
volatile const __u16 outbound_port = 0;
volatile const __u16 dns_port = 0; // 0: the proxy answers no DNS

// An IPv4 origin (where a captured connection was going) is a plain u64, which the loader
// reads without unsafe code:
//   (IPv4 address as in the socket, network byte order) << 32 | port in network byte order;
// and a peer (the app socket's own address, as the proxy sees the peer it accepted) too:
//   (IPv4 address, network byte order) << 32 | port in host byte order.
// An IPv6 origin is 24 bytes: the address as in the socket, then the port as above.
struct origin6 {
	__u32 addr[4];
	__u32 port;
	__u32 reserved;
};

// Socket cookie -> original destination, from connect to established. LRU: a connect that
// never completes leaves an entry that is pushed out, never an unbounded map.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   // socket cookie
	__type(value, __u64); // origin
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // socket cookie
	__type(value, struct origin6);
} pending6 SEC(".maps");

// The app socket's address -> original destination, read by the proxy when it accepts.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   // peer
	__type(value, __u64); // origin
} origins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // peer
	__type(value, struct origin6);
} origins6 SEC(".maps");

// Outbound exclusions, filled by the loader before the programs are attached: what they
// match goes where the app sent it (the iptables rules under the programs leave it too).
#define MAX_EXCLUSIONS 256

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_EXCLUSIONS);
	__type(key, __u16); // destination port, host byte order
	__type(value, __u8);
} excluded_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_EXCLUSIONS);
	__type(key, __u32); // uid
	__type(value, __u8);
} excluded_uids SEC(".maps");

struct net4 {
	__u32 prefixlen;
	__u32 addr; // network byte order
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_EXCLUSIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net4);
	__type(value, __u8);
} excluded_nets4 SEC(".maps");

struct net6 {
	__u32 prefixlen;
	__u32 addr[4]; // network byte order
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_EXCLUSIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net6);
	__type(value, __u8);
} excluded_nets6 SEC(".maps");

// A local TCP connection's socket, as its side sees it. The network namespace is part of
// the key: 127.0.0.1 in one namespace is not 127.0.0.1 in another.
struct local_socket {
	__u64 netns;
	__u32 local_ip4;  // network byte order
	__u32 remote_ip4; // network byte order
	__u32 local_port; // host byte order
	__u32 remote_port; // host byte order
};

// Both sockets of every local connection of the cgroup; a closed socket leaves the map by
// itself. When it is full, new connections take the ordinary path.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct local_socket);
	__type(value, __u32);
} local_sockets SEC(".maps");

// Counters the proxy exports: [0] connects redirected, [1] origins filed, [2] local
// sockets put in the sockhash, [3] messages passed socket to socket.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);
	if (value)
		*value += 1;
}

#define SOCK_STREAM 1          // from the C library, which BPF programs do not include
#define AF_INET 2
#define AF_INET6 10
#define LOOPBACK_NET 0x7f000000 // 127.0.0.0/8, host byte order
#define LOOPBACK 0x7f000001     // 127.0.0.1

static __always_inline int is_loopback(__u32 ip4)
{
	return (bpf_ntohl(ip4) & 0xff000000) == LOOPBACK_NET;
}

// The proxy's own connections, and those of excluded users, go where they are sent.
static __always_inline int user_exempt(void)
{
	__u64 ids = bpf_get_current_uid_gid();
	__u32 uid = (__u32)ids;
	__u32 gid = ids >> 32;
	if (uid == proxy_uid || gid == proxy_gid)
		return 1;
	return bpf_map_lookup_elem(&excluded_uids, &uid) != 0;
}

static __always_inline int port_excluded(__u32 user_port)
{
	__u16 port = bpf_ntohs((__u16)user_port);
	return bpf_map_lookup_elem(&excluded_ports, &port) != 0;
}

static __always_inline int net4_excluded(__u32 ip4)
{
	struct net4 key = {.prefixlen = 32, .addr = ip4};
	return bpf_map_lookup_elem(&excluded_nets4, &key) != 0;
}

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || user_exempt())
		return 1;
	// DNS to any resolver, a local stub on 127.0.0.53 included.
	if (dns_port != 0 && ctx->user_port == bpf_htons(53)) {
		ctx->user_ip4 = bpf_htonl(LOOPBACK);
		ctx->user_port = bpf_htons(dns_port);
		return 1;
	}
	if (is_loopback(ctx->user_ip4) || port_excluded(ctx->user_port) ||
	    net4_excluded(ctx->user_ip4))
		return 1;
	__u64 origin = ((__u64)ctx->user_ip4 << 32) | (ctx->user_port & 0xffff);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&pending, &cookie, &origin, BPF_ANY) != 0)
		return 1; // not recorded: let it go, rather than lose its destination
	ctx->user_ip4 = bpf_htonl(LOOPBACK);
	ctx->user_port = bpf_htons(outbound_port);
	count(0);
	return 1;
}

// An IPv6 socket is sent to the listener at ::ffff:127.0.0.1 (the kernel connects it over
// IPv4). A socket with IPV6_V6ONLY set cannot be, and its connect fails: closed, not
// around the mesh.
static __always_inline void to_listener6(struct bpf_sock_addr *ctx, __u16 port)
{
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
	ctx->user_ip6[3] = bpf_htonl(LOOPBACK);
	ctx->user_port = bpf_htons(port);
}

SEC("cgroup/connect6")
int weft_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || user_exempt())
		return 1;
	if (dns_port != 0 && ctx->user_port == bpf_htons(53)) {
		to_listener6(ctx, dns_port);
		return 1;
	}
	if (port_excluded(ctx->user_port))
		return 1;
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2],
	      a3 = ctx->user_ip6[3];
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff)) {
		// An IPv4 address in an IPv6 socket: judged and filed as IPv4.
		if (is_loopback(a3) || net4_excluded(a3))
			return 1;
		__u64 origin = ((__u64)a3 << 32) | (ctx->user_port & 0xffff);
		if (bpf_map_update_elem(&pending, &cookie, &origin, BPF_ANY) != 0)
			return 1;
	} else {
		if (a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1))
			return 1; // ::1
		struct net6 net = {.prefixlen = 128, .addr = {a0, a1, a2, a3}};
		if (bpf_map_lookup_elem(&excluded_nets6, &net))
			return 1;
		struct origin6 origin = {
			.addr = {a0, a1, a2, a3},
			.port = ctx->user_port & 0xffff,
		};
		if (bpf_map_update_elem(&pending6, &cookie, &origin, BPF_ANY) != 0)
			return 1;
	}
	to_listener6(ctx, outbound_port);
	count(0);
	return 1;
}

// Files a captured connection's destination under the app socket's address (for an IPv6
// socket sent to the listener, its IPv4 side: 127.0.0.1 and its port).
static __always_inline void file_origin(struct bpf_sock_ops *ops)
{
	__u64 cookie = bpf_get_socket_cookie(ops);
	__u64 peer = ((__u64)ops->local_ip4 << 32) | ops->local_port;
	__u64 *origin = bpf_map_lookup_elem(&pending, &cookie);
	if (origin) {
		bpf_map_update_elem(&origins, &peer, origin, BPF_ANY);
		bpf_map_delete_elem(&pending, &cookie);
		count(1);
		return;
	}
	struct origin6 *origin6 = bpf_map_lookup_elem(&pending6, &cookie);
	if (origin6) {
		bpf_map_update_elem(&origins6, &peer, origin6, BPF_ANY);
		bpf_map_delete_elem(&pending6, &cookie);
		count(1);
	}
}

// Puts a socket of a connection with both ends on loopback in `local_sockets`.
static __always_inline void add_local_socket(struct bpf_sock_ops *ops)
{
	if (!is_loopback(ops->local_ip4) || !is_loopback(ops->remote_ip4))
		return;
	struct local_socket key = {
		.netns = bpf_get_netns_cookie(ops),
		.local_ip4 = ops->local_ip4,
		.remote_ip4 = ops->remote_ip4,
		.local_port = ops->local_port,
		.remote_port = bpf_ntohl(ops->remote_port),
	};
	if (bpf_sock_hash_update(ops, &local_sockets, &key, BPF_NOEXIST) == 0)
		count(2);
}

// Whether a socket's connection runs over IPv4: an IPv4 socket, or an IPv6 one whose
// address is IPv4-mapped (as connect6 sends an app's IPv6 socket to the listener). The
// kernel fills the IPv4 fields of both.
#define OVER_IPV4(ctx)                                                         \
	((ctx)->family == AF_INET ||                                           \
	 ((ctx)->family == AF_INET6 && (ctx)->local_ip6[0] == 0 &&             \
	  (ctx)->local_ip6[1] == 0 && (ctx)->local_ip6[2] == bpf_htonl(0x0000ffff)))

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *ops)
{
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		file_origin(ops);
		if (OVER_IPV4(ops))
			add_local_socket(ops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (OVER_IPV4(ops))
			add_local_socket(ops);
		break;
	}
	return 1;
}

SEC("sk_msg")
int weft_sk_msg(struct sk_msg_md *msg)
{
	if (!OVER_IPV4(msg))
		return SK_PASS;
	// The other end of the connection: its local side is this one's remote side.
	struct local_socket peer = {
		.netns = bpf_get_netns_cookie(msg),
		.local_ip4 = msg->remote_ip4,
		.remote_ip4 = msg->local_ip4,
		.local_port = bpf_ntohl(msg->remote_port),
		.remote_port = msg->local_port,
	};
	// Not in the map (the peer is outside the cgroup, or the map was full): the helper
	// sets no redirect and the data takes the TCP/IP stack as usual.
	if (bpf_msg_redirect_hash(msg, &local_sockets, &peer, BPF_F_INGRESS) == SK_PASS)
		count(3);
	return SK_PASS;
}

// No GPL-only helper is used, so the license need not be GPL-compatible.
char LICENSE[] SEC("license") = "Apache-2.0";
