//! Example resources shared by the tests, written the way users (and `kubectl`) write them.

/// A mesh of two applications: `reviews` (HTTP, three versions and a shadow) and
/// `greeter` (gRPC, with a canary).
pub const SERVICES: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  trustDomain: example.org
  mtls:
    mode: permissive
  certificateTTL: 12h
  defaultAuthorization: deny
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  ports:
  - port: 9080
    protocol: http
    name: http
  healthCheck:
    http:
      path: /healthz
    interval: 5s
    timeout: 1s
    unhealthyThreshold: 3
    healthyThreshold: 1
  endpoints:
  - address: 127.0.0.1:7101
    labels:
      version: v1
    zone: zone-a
    mesh: true
  - address: "[::1]:7102"
    mesh: true
    identity: spiffe://partner.example/ns/bookinfo/svc/reviews
  - address: 10.0.0.9:9080
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: reviews-v1, namespace: bookinfo}
spec:
  ports: [{port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: reviews-v2, namespace: bookinfo}
spec:
  ports: [{port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: reviews-v3, namespace: bookinfo}
spec:
  ports: [{port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: reviews-shadow, namespace: bookinfo}
spec:
  ports: [{port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: greeter}
spec:
  ports: [{port: 50051, protocol: grpc}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: greeter-canary}
spec:
  ports: [{port: 50051, protocol: grpc}]
"#;

/// A GAMMA HTTPRoute as `kubectl get -o yaml` prints it: Kubernetes metadata and status.
pub const HTTP_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: bookinfo
  uid: 6f0e2c1a-0000-4000-8000-000000000001
  resourceVersion: "12345"
  generation: 2
  creationTimestamp: "2024-01-01T00:00:00Z"
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
  labels:
    app: reviews
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  hostnames:
  - reviews.bookinfo.svc.cluster.local
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /api/v2/
      headers:
      - type: Exact
        name: X-Canary
        value: "true"
      queryParams:
      - type: RegularExpression
        name: user
        value: "[a-z]+"
      method: get
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: X-Route
          value: canary
        add:
        - name: X-Trace
          value: "1"
        remove: ["X-Debug"]
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: reviews-shadow
          port: 9080
        fraction:
          numerator: 1
          denominator: 8
    backendRefs:
    - name: reviews-v2
      port: 9080
      weight: 90
    - group: ""
      kind: Service
      name: reviews-v3
      port: 9080
      weight: 10
    timeouts:
      request: 10s
      backendRequest: 500ms
    retry:
      attempts: 3
      codes: [503]
      backoff: 100ms
  - matches:
    - path:
        type: Exact
        value: /old
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        path:
          type: ReplaceFullPath
          replaceFullPath: /new
        statusCode: 301
  - backendRefs:
    - name: reviews-v1
      port: 9080
    timeouts:
      request: 0s
status:
  parents:
  - parentRef:
      name: reviews
    controllerName: example.com/mesh-controller
    conditions:
    - type: Accepted
      status: "True"
"#;

/// A GRPCRoute in the Gateway API v1 shape, with Weft's retry extension.
pub const GRPC_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: greeter
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: greeter
    port: 50051
  rules:
  - matches:
    - method:
        service: helloworld.Greeter
        method: SayHello
      headers:
      - name: Env
        value: canary
    backendRefs:
    - name: greeter-canary
      port: 50051
  - matches:
    - method:
        type: RegularExpression
        service: "helloworld\\..*"
    - method:
        service: helloworld.Greeter
    - method:
        method: Ping
    backendRefs:
    - name: greeter
      port: 50051
    retry:
      attempts: 2
      grpcCodes: [UNAVAILABLE, 4]
"#;

pub const POLICIES: &str = r#"apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: reviews
  namespace: bookinfo
spec:
  targetRef:
    kind: Service
    name: reviews
  loadBalancer:
    type: RingHash
    ringHash:
      header: X-User
  connectionLimits:
    maxConnections: 100
    maxRequests: 1000
  outlierDetection:
    consecutive5xx: 3
  retryBudget:
    ratio: 0.1
  rateLimit:
    requestsPerSecond: 12.5
  fault:
    delay: {percent: 5, duration: 200ms}
    abort: {percent: 0.5, status: 503}
  connectTimeout: 250ms
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: reviews
  namespace: bookinfo
spec:
  targetRef: {kind: Service, name: reviews}
  action: DENY
  rules:
  - from:
    - identities: [spiffe://example.org/ns/default/svc/greeter]
      namespaces: [default]
    to:
    - methods: [POST, delete]
      paths: [/admin/*]
      ports: [9080]
    when:
    - header: X-Env
      values: [prod]
"#;

/// Everything above, as one multi-document stream.
pub fn all() -> String {
    [SERVICES, HTTP_ROUTE, GRPC_ROUTE, POLICIES].join("\n---\n")
}
