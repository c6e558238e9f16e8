// SPDX-License-Identifier: Apache-2.0
//
// Weft's eBPF capture, attached to the cgroup (v2) of one workload: its app and its proxy.
//
// connect4: an outbound TCP connect by the app (any uid but the proxy's) to an address
// outside 127.0.0.0/8 is sent to the proxy's outbound listener instead, and the address it
// asked for is kept under the socket's cookie. No NAT, no conntrack: the kernel connects
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
volatile const __u16 outbound_port = 0;
volatile const __u16 dns_port = 0; // 0: the proxy answers no DNS

// Keys and values are plain u64s, which the loader reads without unsafe code:
//
// an origin (where a captured connection was going) is
//   (IPv4 address as in the socket, network byte order) << 32 | port in network byte order;
// a peer (the app socket's own address, as the proxy sees the peer it accepted) is
//   (IPv4 address, network byte order) << 32 | port in host byte order.

// Socket cookie -> original destination, from connect to established. LRU: a connect that
// never completes leaves an entry that is pushed out, never an unbounded map.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   // socket cookie
	__type(value, __u64); // origin
} pending SEC(".maps");

// The app socket's address -> original destination, read by the proxy when it accepts.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   // peer
	__type(value, __u64); // origin
} origins SEC(".maps");

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
#define LOOPBACK_NET 0x7f000000 // 127.0.0.0/8, host byte order
#define LOOPBACK 0x7f000001     // 127.0.0.1

static __always_inline int is_loopback(__u32 ip4)
{
	return (bpf_ntohl(ip4) & 0xff000000) == LOOPBACK_NET;
}

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	// The proxy's own connections go where it sends them.
	if ((__u32)bpf_get_current_uid_gid() == proxy_uid)
		return 1;
	// DNS to any resolver, a local stub on 127.0.0.53 included.
	if (dns_port != 0 && ctx->user_port == bpf_htons(53)) {
		ctx->user_ip4 = bpf_htonl(LOOPBACK);
		ctx->user_port = bpf_htons(dns_port);
		return 1;
	}
	if (is_loopback(ctx->user_ip4))
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

// Files a captured connection's destination under the app socket's address.
static __always_inline void file_origin(struct bpf_sock_ops *ops)
{
	__u64 cookie = bpf_get_socket_cookie(ops);
	__u64 *origin = bpf_map_lookup_elem(&pending, &cookie);
	if (!origin)
		return;
	__u64 peer = ((__u64)ops->local_ip4 << 32) | ops->local_port;
	bpf_map_update_elem(&origins, &peer, origin, BPF_ANY);
	bpf_map_delete_elem(&pending, &cookie);
	count(1);
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

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *ops)
{
	if (ops->family != AF_INET)
		return 1;
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		file_origin(ops);
		add_local_socket(ops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		add_local_socket(ops);
		break;
	}
	return 1;
}

SEC("sk_msg")
int weft_sk_msg(struct sk_msg_md *msg)
{
	if (msg->family != AF_INET)
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
