#!/usr/bin/env node
// Independent client for the gRPC runtime's test service (proto/meshid/test/v1/echo.proto),
// run by tests/unit/rpc (test_interop_node): unary Echo with metadata, then a
// server-streaming Watch. Usage: node rpc_echo_client.js TARGET PROTO_ROOT
// Prints one JSON line; exits 0 on success.
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [target, protoRoot] = process.argv.slice(2);
if (!target || !protoRoot) {
  console.error('usage: rpc_echo_client.js TARGET PROTO_ROOT');
  process.exit(2);
}
const def = loader.loadSync('meshid/test/v1/echo.proto', { includeDirs: [protoRoot], defaults: true });
const Echo = grpc.loadPackageDefinition(def).meshid.test.v1.Echo;
const client = new Echo(target, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 5000);
const fail = (what, err) => {
  console.log(JSON.stringify({ ok: false, what, code: err && err.code, details: err && err.details }));
  process.exit(1);
};

const md = new grpc.Metadata();
md.set('workload.spiffe.io', 'true');
client.Echo({ text: 'from node' }, md, { deadline: deadline() }, (err, resp) => {
  if (err) fail('echo', err);
  if (resp.text !== 'from node') fail('echo text', { details: resp.text });
  let n = 0;
  const s = client.Watch({ text: 'w', count: 100 }, { deadline: deadline() });
  s.on('data', (m) => { if (m.seq !== n) fail('watch order', { details: `${m.seq} != ${n}` }); n++; });
  s.on('error', (e) => fail('watch', e));
  s.on('status', (st) => {
    if (st.code !== grpc.status.OK || n !== 100) fail('watch end', { code: st.code, details: `${n} messages` });
    console.log(JSON.stringify({ ok: true, peer: resp.peer, watched: n, pid: process.pid }));
    client.close();
  });
});
