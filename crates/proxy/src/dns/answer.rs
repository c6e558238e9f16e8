//! One DNS query, decided: answered here when it names a mesh service, relayed otherwise.
//!
//! Pure (bytes in, bytes or a decision out), so every malformed or hostile message is
//! tested without a socket.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use std::net::IpAddr;
use weft_model::VirtualIps;

/// How long resolvers may cache a service's address. Virtual IPs live as long as their
/// Service, so this only bounds how long a deleted Service's name keeps answering.
const TTL_SECONDS: u32 = 30;

/// The EDNS payload size advertised in answers (the size DNS Flag Day 2020 settled on).
const EDNS_PAYLOAD: u16 = 1232;

/// What to do with one message.
#[derive(Debug)]
pub enum Decision {
    /// Answered here.
    Answer { reply: Vec<u8>, result: Answered },
    /// Not a mesh name: relay it to the upstream resolvers. The parsed query is kept for
    /// the SERVFAIL answer if none of them answers.
    Relay(Box<Message>),
    /// Not a query (a response, or too short to carry an id): nothing is sent back, so
    /// two resolvers can never be made to answer each other in a loop.
    Ignore,
}

/// The `result` label of `weft_dns_queries_total` for an answer made here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// A service's virtual IP.
    Mesh,
    /// A service's name, asked for a type it has no record of (AAAA of an IPv4 VIP, MX,
    /// TXT...): an empty NOERROR answer, so the app's resolver does not go on to ask
    /// elsewhere.
    MeshNoData,
    /// A message that is not a well-formed standard query: FORMERR or NOTIMP.
    Malformed,
}

impl Answered {
    pub fn label(self) -> &'static str {
        match self {
            Answered::Mesh => "mesh",
            Answered::MeshNoData => "mesh_no_data",
            Answered::Malformed => "malformed",
        }
    }
}

/// Decides `packet`. `zones` are the domains `NAME.NAMESPACE.svc.ZONE` is answered in;
/// `lookup(name, namespace)` gives a service's virtual IPs, `None` when no service has
/// the name (`namespace` is `None` for a bare name: the proxy's own namespace);
/// `host(name)` those of the service that claims `name` among its `hosts`.
pub fn decide(
    packet: &[u8],
    zones: &[&str],
    lookup: impl Fn(&str, Option<&str>) -> Option<VirtualIps>,
    host: impl Fn(&str) -> Option<VirtualIps>,
) -> Decision {
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => return malformed(packet),
    };
    if request.metadata.message_type != MessageType::Query {
        return Decision::Ignore;
    }
    if request.metadata.op_code != OpCode::Query {
        return Decision::Answer {
            reply: error_reply(&request, ResponseCode::NotImp),
            result: Answered::Malformed,
        };
    }
    let [query] = &request.queries[..] else {
        return Decision::Answer {
            reply: error_reply(&request, ResponseCode::FormErr),
            result: Answered::Malformed,
        };
    };
    if query.query_class() != DNSClass::IN {
        return Decision::Relay(Box::new(request));
    }
    let name = query.name().to_lowercase().to_ascii();
    let Some(ips) = mesh_name(&name, zones)
        .and_then(|(name, namespace)| lookup(name, namespace))
        .or_else(|| host(name.strip_suffix('.').unwrap_or(&name)))
    else {
        return Decision::Relay(Box::new(request));
    };
    let record = match (query.query_type(), ips.v4, ips.v6) {
        (RecordType::A, Some(IpAddr::V4(v4)), _) => Some(RData::A(A(v4))),
        (RecordType::AAAA, _, Some(IpAddr::V6(v6))) => Some(RData::AAAA(AAAA(v6))),
        _ => None,
    };
    let result = if record.is_some() {
        Answered::Mesh
    } else {
        Answered::MeshNoData
    };
    let mut reply = reply_to(&request, query);
    reply.metadata.authoritative = true;
    if let Some(record) = record {
        reply.add_answer(Record::from_rdata(
            query.name().clone(),
            TTL_SECONDS,
            record,
        ));
    }
    Decision::Answer {
        reply: encode(&reply),
        result,
    }
}

/// SERVFAIL for a relayed query no upstream answered (or that could not be relayed).
pub fn server_failure(request: &Message) -> Vec<u8> {
    error_reply(request, ResponseCode::ServFail)
}

/// The `(name, namespace)` a query name is for, if it has a mesh form: `NAME`,
/// `NAME.NAMESPACE`, `NAME.NAMESPACE.svc` or `NAME.NAMESPACE.svc.ZONE` (lower case, with
/// or without the final dot).
fn mesh_name<'a>(name: &'a str, zones: &[&str]) -> Option<(&'a str, Option<&'a str>)> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let stem = zones
        .iter()
        .find_map(|zone| {
            name.strip_suffix(zone)
                .and_then(|rest| rest.strip_suffix(".svc."))
        })
        .or_else(|| name.strip_suffix(".svc"))
        .unwrap_or(name);
    match stem.split_once('.') {
        None if !stem.is_empty() => Some((stem, None)),
        Some((name, namespace)) if !name.is_empty() && !namespace.contains('.') => {
            Some((name, Some(namespace)))
        }
        _ => None,
    }
}

/// A response to `request` carrying its question, with EDNS when it had EDNS (RFC 6891
/// says a responder must).
fn reply_to(request: &Message, query: &Query) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(query.clone());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

fn error_reply(request: &Message, code: ResponseCode) -> Vec<u8> {
    let mut reply = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(request.queries.iter().cloned());
    encode(&reply)
}

/// A message hickory cannot parse: FORMERR with its id when it has a whole header and
/// says it is a query, else nothing.
fn malformed(packet: &[u8]) -> Decision {
    const HEADER: usize = 12;
    let is_query = packet.len() >= HEADER && packet[2] & 0x80 == 0;
    if !is_query {
        return Decision::Ignore;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
    Decision::Answer {
        reply: encode(&reply),
        result: Answered::Malformed,
    }
}

fn encode(reply: &Message) -> Vec<u8> {
    // Replies made here are a header, one question and at most one address: always
    // encodable. An empty reply would only make the client retry.
    reply.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(240, 240, 0, 7));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 7));
    const ZONES: &[&str] = &["cluster.local", "weft.local"];

    /// `reviews` in `default` (the proxy's namespace) and `ratings` in `shop`; only
    /// `reviews` has an IPv6 address.
    fn lookup(name: &str, namespace: Option<&str>) -> Option<VirtualIps> {
        match (name, namespace.unwrap_or("default")) {
            ("reviews", "default") => Some(VirtualIps {
                v4: Some(VIP),
                v6: Some(VIP6),
            }),
            ("ratings", "shop") => Some(VirtualIps {
                v4: Some(VIP),
                v6: None,
            }),
            _ => None,
        }
    }

    /// `api.payments.example` is a service's host (an external API, IPv4 only).
    fn host(name: &str) -> Option<VirtualIps> {
        (name == "api.payments.example").then_some(VirtualIps {
            v4: Some(VIP),
            v6: None,
        })
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message.to_vec().unwrap()
    }

    fn answer(packet: &[u8]) -> (Message, Answered) {
        match decide(packet, ZONES, lookup, host) {
            Decision::Answer { reply, result } => (Message::from_vec(&reply).unwrap(), result),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn every_form_of_a_service_name_gets_its_virtual_ip() {
        for name in [
            "reviews",
            "reviews.",
            "REVIEWS",
            "reviews.default",
            "reviews.default.svc",
            "reviews.default.svc.cluster.local.",
            "reviews.default.svc.weft.local",
            "ratings.shop",
            "ratings.shop.svc.cluster.local",
            "api.payments.example",
            "API.Payments.Example.",
        ] {
            let (reply, result) = answer(&query(name, RecordType::A));
            assert_eq!(result, Answered::Mesh, "{name}");
            assert_eq!(reply.metadata.id, 4242);
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
            assert_eq!(reply.queries.len(), 1, "{name}: the question is echoed");
            let ips: Vec<_> = reply
                .answers
                .iter()
                .filter_map(|r| r.data.ip_addr())
                .collect();
            assert_eq!(ips, [VIP], "{name}");
        }
    }

    #[test]
    fn aaaa_gets_the_ipv6_virtual_ip() {
        let (reply, result) = answer(&query(
            "reviews.default.svc.cluster.local",
            RecordType::AAAA,
        ));
        assert_eq!(result, Answered::Mesh);
        let ips: Vec<_> = reply
            .answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect();
        assert_eq!(ips, [VIP6]);
    }

    #[test]
    fn a_service_name_asked_for_another_type_is_an_empty_answer_not_a_relay() {
        for kind in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let (reply, result) = answer(&query("ratings.shop", kind));
            assert_eq!(result, Answered::MeshNoData, "{kind}");
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.answers.is_empty());
        }
    }

    #[test]
    fn other_names_are_relayed() {
        for name in [
            "example.com",
            "www.example.com",
            "ratings",       // not in the proxy's namespace
            "reviews.other", // no such namespace
            "reviews.default.svc.example.org",
            "a.b.c.d",
            ".",
        ] {
            assert!(
                matches!(
                    decide(&query(name, RecordType::A), ZONES, lookup, host),
                    Decision::Relay(_)
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn garbage_gets_formerr_or_nothing_and_responses_are_never_answered() {
        // A header claiming a question that is not there.
        let mut truncated = query("reviews", RecordType::A);
        truncated.truncate(14);
        let (reply, result) = answer(&truncated);
        assert_eq!(result, Answered::Malformed);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, 4242);

        for packet in [&[][..], &[1, 2, 3][..]] {
            assert!(matches!(
                decide(packet, ZONES, lookup, host),
                Decision::Ignore
            ));
        }
        let mut response = Message::response(7, OpCode::Query);
        response.add_query(Query::query(
            Name::from_ascii("reviews").unwrap(),
            RecordType::A,
        ));
        let response = response.to_vec().unwrap();
        assert!(matches!(
            decide(&response, ZONES, lookup, host),
            Decision::Ignore
        ));
        // A response that does not even parse is ignored too.
        let mut broken_response = response.clone();
        broken_response.truncate(14);
        assert!(matches!(
            decide(&broken_response, ZONES, lookup, host),
            Decision::Ignore
        ));
    }

    #[test]
    fn not_exactly_one_question_is_formerr_and_other_opcodes_notimp() {
        let mut two = Message::query();
        two.add_query(Query::query(
            Name::from_ascii("reviews").unwrap(),
            RecordType::A,
        ));
        two.add_query(Query::query(
            Name::from_ascii("ratings").unwrap(),
            RecordType::A,
        ));
        let (reply, _) = answer(&two.to_vec().unwrap());
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

        let mut none = Message::query();
        none.metadata.id = 9;
        let (reply, _) = answer(&none.to_vec().unwrap());
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

        let mut status = Message::query();
        status.metadata.op_code = OpCode::Status;
        let (reply, result) = answer(&status.to_vec().unwrap());
        assert_eq!(result, Answered::Malformed);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn edns_queries_get_edns_answers() {
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_ascii("reviews").unwrap(),
            RecordType::A,
        ));
        message.set_edns(Edns::new());
        let (reply, _) = answer(&message.to_vec().unwrap());
        assert_eq!(reply.edns.map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
        let (plain, _) = answer(&query("reviews", RecordType::A));
        assert!(plain.edns.is_none());
    }

    #[test]
    fn a_relayed_query_that_fails_gets_servfail_with_its_question() {
        let Decision::Relay(request) =
            decide(&query("example.com", RecordType::A), ZONES, lookup, host)
        else {
            panic!("expected a relay");
        };
        let reply = Message::from_vec(&server_failure(&request)).unwrap();
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.queries, request.queries);
    }
}
