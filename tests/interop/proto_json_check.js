#!/usr/bin/env node
// Strict check of a JSON document against Envoy's OFFICIAL protos (the copies
// @grpc/grpc-js-xds ships in deps/, found as check_protos.js finds them):
//
//   node proto_json_check.js TYPE FILE.json
//   node proto_json_check.js any FILE          (each element carries "@type")
//
// TYPE is a fully-qualified message name, e.g. envoy.config.bootstrap.v3.Bootstrap.
// FILE holds one JSON value; a top-level array, or JSON lines (one value per
// line), is checked element by element (the shape of `meshid xds dump`).
// With TYPE "any" every element is a google.protobuf.Any in JSON form.
//
// What is checked, the first problem ends the run (exit 1, message naming
// the JSON path):
//   - every key is a field of the message (proto name or lowerCamelCase JSON
//     name); no field twice; at most one member of each oneof;
//   - value types: numbers in range for their integer type (64-bit ones also
//     as decimal strings), bools, strings, base64 bytes, enum values by a
//     defined name (or a defined number);
//   - google.protobuf.Any: "@type" must name a type found in the official
//     protos (its package directory is loaded on demand) and the rest is
//     checked as that type, recursively; well-known types in their JSON form
//     (Duration "1.5s", Timestamp RFC 3339, wrappers as plain values,
//     Struct / Value / ListValue as JSON, FieldMask, Empty);
//   - the protoc-gen-validate rules in the official protos that Envoy
//     enforces when it loads configuration: required messages and oneofs,
//     string/bytes lengths, patterns and sets, number bounds, repeated and
//     map sizes, Duration bounds ("has the fields Envoy requires");
//   - a round trip through protobufjs: fromObject, verify, encode, decode,
//     encode again, byte-identical.
// Deprecated fields are reported on stderr as notes, not errors.
// Prints "ok TYPE FILE" (with the element count for arrays) and exits 0.
// Exit 2: usage, unreadable file or protos not installed (tests/interop/setup.sh).
'use strict';

const fs = require('fs');
const path = require('path');

const HERE = __dirname;
const LOADER_DIR = path.dirname(require.resolve('@grpc/proto-loader/package.json', { paths: [HERE] }));
const protobuf = require(require.resolve('protobufjs', { paths: [LOADER_DIR] }));
const XDS_DEPS = path.join(HERE, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const OFFICIAL_DIRS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate']
  .map((d) => path.join(XDS_DEPS, d))
  .concat([path.dirname(require.resolve('protobufjs/package.json', { paths: [LOADER_DIR] }))]);
const WKT_FILES = ['any', 'duration', 'empty', 'struct', 'wrappers', 'timestamp', 'field_mask']
  .map((n) => `google/protobuf/${n}.proto`);

class CheckError extends Error {
  constructor(where, msg) {
    super(msg);
    this.where = where || '(top)';
  }
}
const fail = (where, msg) => { throw new CheckError(where, msg); };
const strip = (n) => n.replace(/^\./, '');
const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const describe = (v) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `${typeof v} ${JSON.stringify(v).slice(0, 60)}`);

// ---- loading ---------------------------------------------------------------------------------

const root = new protobuf.Root();
root.resolvePath = (origin, target) => {
  if (path.isAbsolute(target)) return target;
  for (const dir of OFFICIAL_DIRS) {
    const p = path.join(dir, target);
    if (fs.existsSync(p)) return p;
  }
  return target; // protobufjs' bundled well-known types, or a loud failure
};
const loadedDirs = new Set();

function loadFiles(files) {
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
}

// The Type for a fully-qualified name, loading every .proto of its package
// directory (envoy.extensions.filters.http.rbac.v3.RBAC ->
// envoy/extensions/filters/http/rbac/v3/*.proto) when it is not loaded yet.
function findType(fullName) {
  const look = () => {
    try {
      const t = root.lookup(fullName);
      return t instanceof protobuf.Type ? t : null;
    } catch (e) {
      return null;
    }
  };
  let t = look();
  if (t) return t;
  const parts = fullName.split('.');
  for (let n = parts.length - 1; n > 0 && !t; n--) {
    const rel = parts.slice(0, n).join('/');
    for (const base of OFFICIAL_DIRS.slice(0, 4)) {
      const dir = path.join(base, rel);
      if (loadedDirs.has(dir) || !fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) continue;
      loadedDirs.add(dir);
      const files = fs.readdirSync(dir).filter((f) => f.endsWith('.proto')).map((f) => path.join(dir, f));
      if (files.length) loadFiles(files);
      t = look();
      if (t) break;
    }
  }
  return t;
}

// ---- protoc-gen-validate rules ----------------------------------------------------------------

function deepMerge(a, b) {
  if (!isObj(a) || !isObj(b)) {
    if (a === undefined) return b;
    return [].concat(a, b); // a repeated rule value ("in": [...])
  }
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = k in out ? deepMerge(out[k], v) : v;
  return out;
}

function rulesOf(field) {
  let rules;
  for (const o of field.parsedOptions || []) {
    if (o && '(validate.rules)' in o) rules = deepMerge(rules, o['(validate.rules)']);
  }
  return rules;
}

const list = (x) => (Array.isArray(x) ? x : [x]);
const HEADER_NAME = /^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$/;
const HEADER_VALUE = /^[^\u0000-\u0008\u000A-\u001F\u007F]*$/;
const LOOSE = /^[^\u0000\u000A\u000D]*$/;

function numberRules(r, v, where, what) {
  const x = typeof v === 'string' ? Number(v) : v;
  if (r.const !== undefined && x !== Number(r.const)) fail(where, `${what} must be ${r.const}, is ${v}`);
  if (r.gt !== undefined && !(x > Number(r.gt))) fail(where, `${what} must be > ${r.gt}, is ${v}`);
  if (r.gte !== undefined && !(x >= Number(r.gte))) fail(where, `${what} must be >= ${r.gte}, is ${v}`);
  if (r.lt !== undefined && !(x < Number(r.lt))) fail(where, `${what} must be < ${r.lt}, is ${v}`);
  if (r.lte !== undefined && !(x <= Number(r.lte))) fail(where, `${what} must be <= ${r.lte}, is ${v}`);
  if (r.in !== undefined && !list(r.in).map(Number).includes(x)) fail(where, `${what} must be one of ${list(r.in)}, is ${v}`);
  if (r.not_in !== undefined && list(r.not_in).map(Number).includes(x)) fail(where, `${what} must not be ${v}`);
}

function stringRules(r, v, where, what) {
  if (r.ignore_empty && v === '') return;
  const chars = [...v].length;
  const bytes = Buffer.byteLength(v, 'utf8');
  if (r.min_len !== undefined && chars < r.min_len) fail(where, `${what} must have at least ${r.min_len} character(s)${v === '' ? ' (it is empty or missing)' : ''}`);
  if (r.max_len !== undefined && chars > r.max_len) fail(where, `${what} must have at most ${r.max_len} characters`);
  if (r.len !== undefined && chars !== Number(r.len)) fail(where, `${what} must have ${r.len} characters`);
  if (r.min_bytes !== undefined && bytes < r.min_bytes) fail(where, `${what} must have at least ${r.min_bytes} byte(s)`);
  if (r.max_bytes !== undefined && bytes > r.max_bytes) fail(where, `${what} must have at most ${r.max_bytes} bytes`);
  if (r.const !== undefined && v !== r.const) fail(where, `${what} must be "${r.const}"`);
  if (r.prefix !== undefined && !v.startsWith(r.prefix)) fail(where, `${what} must start with "${r.prefix}"`);
  if (r.suffix !== undefined && !v.endsWith(r.suffix)) fail(where, `${what} must end with "${r.suffix}"`);
  if (r.contains !== undefined && !v.includes(r.contains)) fail(where, `${what} must contain "${r.contains}"`);
  if (r.in !== undefined && !list(r.in).includes(v)) fail(where, `${what} must be one of ${JSON.stringify(list(r.in))}`);
  if (r.not_in !== undefined && list(r.not_in).includes(v)) fail(where, `${what} must not be "${v}"`);
  if (r.pattern !== undefined) {
    let re = null;
    try { re = new RegExp(r.pattern, 'u'); } catch (e) { re = null; } // RE2-only syntax: not checked
    if (re && !re.test(v)) fail(where, `${what} "${v}" does not match ${r.pattern}`);
  }
  if (r.well_known_regex !== undefined) {
    const strict = r.strict !== false;
    const re = !strict ? LOOSE : r.well_known_regex === 'HTTP_HEADER_NAME' ? HEADER_NAME : HEADER_VALUE;
    if (!re.test(v)) fail(where, `${what} "${v}" is not a valid ${r.well_known_regex}`);
  }
}

// Rules of one value: scalar kind name as PGV spells it.
function valueRules(rules, kind, v, where, what) {
  if (!rules) return;
  if (kind === 'string' && rules.string) stringRules(rules.string, v, where, what);
  else if (kind === 'bytes' && rules.bytes) {
    const r = rules.bytes;
    if (r.min_len !== undefined && v.length < r.min_len) fail(where, `${what} must have at least ${r.min_len} byte(s)`);
    if (r.max_len !== undefined && v.length > r.max_len) fail(where, `${what} must have at most ${r.max_len} bytes`);
  } else if (kind === 'bool' && rules.bool) {
    if (rules.bool.const !== undefined && v !== rules.bool.const) fail(where, `${what} must be ${rules.bool.const}`);
  } else if (kind === 'enum' && rules.enum) {
    const r = rules.enum;
    if (r.const !== undefined && v.num !== Number(r.const)) fail(where, `${what} must be ${r.const}`);
    if (r.in !== undefined && !list(r.in).map(Number).includes(v.num)) fail(where, `${what} must be one of ${list(r.in)}`);
    if (r.not_in !== undefined && list(r.not_in).map(Number).includes(v.num)) fail(where, `${what} must not be ${v.name}`);
  } else if (rules[kind]) {
    numberRules(rules[kind], v, where, what);
  }
}

function durationNanos(d) {
  return BigInt(d.seconds || 0) * 1000000000n + BigInt(d.nanos || 0);
}

function durationRules(r, d, where, what) {
  const v = durationNanos(d);
  const cmp = (lim) => durationNanos(isObj(lim) ? lim : {});
  if (r.gt !== undefined && !(v > cmp(r.gt))) fail(where, `${what} must be longer than ${cmp(r.gt)}ns`);
  if (r.gte !== undefined && !(v >= cmp(r.gte))) fail(where, `${what} must be at least ${cmp(r.gte)}ns`);
  if (r.lt !== undefined && !(v < cmp(r.lt))) fail(where, `${what} must be shorter than ${cmp(r.lt)}ns`);
  if (r.lte !== undefined && !(v <= cmp(r.lte))) fail(where, `${what} must be at most ${cmp(r.lte)}ns`);
}

// ---- JSON walk ---------------------------------------------------------------------------------

const INT_RANGE = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n], sint32: [-(2n ** 31n), 2n ** 31n - 1n],
  sfixed32: [-(2n ** 31n), 2n ** 31n - 1n], uint32: [0n, 2n ** 32n - 1n], fixed32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n], sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n], uint64: [0n, 2n ** 64n - 1n], fixed64: [0n, 2n ** 64n - 1n],
};
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;
const BASE64URL = /^[A-Za-z0-9\-_]*={0,2}$/;
const notes = [];

// A scalar of protobuf type `t` -> the value protobufjs' fromObject takes.
function checkScalar(t, v, where) {
  if (t in INT_RANGE) {
    let big;
    if (typeof v === 'number' && Number.isInteger(v)) big = BigInt(v);
    else if (typeof v === 'string' && /^-?[0-9]+$/.test(v)) big = BigInt(v);
    else fail(where, `expected an integer (${t}), got ${describe(v)}`);
    const [lo, hi] = INT_RANGE[t];
    if (big < lo || big > hi) fail(where, `${v} is out of range for ${t}`);
    return t.endsWith('64') ? big.toString() : Number(big);
  }
  switch (t) {
    case 'double':
    case 'float':
      if (typeof v === 'number') return v;
      if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return Number(v);
      if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
      return fail(where, `expected a number (${t}), got ${describe(v)}`);
    case 'bool':
      if (typeof v !== 'boolean') fail(where, `expected true or false, got ${describe(v)}`);
      return v;
    case 'string':
      if (typeof v !== 'string') fail(where, `expected a string, got ${describe(v)}`);
      return v;
    case 'bytes':
      if (typeof v !== 'string' || !(BASE64.test(v) || BASE64URL.test(v))) fail(where, `expected base64 bytes, got ${describe(v)}`);
      return Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    default:
      return fail(where, `unsupported scalar type ${t}`);
  }
}

function checkEnum(E, v, where) {
  if (strip(E.fullName) === 'google.protobuf.NullValue') {
    if (v !== null && v !== 'NULL_VALUE' && v !== 0) fail(where, `expected null, got ${describe(v)}`);
    return { name: 'NULL_VALUE', num: 0 };
  }
  if (typeof v === 'string') {
    if (!(v in E.values)) {
      fail(where, `"${v}" is not a value of enum ${strip(E.fullName)} (${Object.keys(E.values).join(', ')})`);
    }
    return { name: v, num: E.values[v] };
  }
  if (typeof v === 'number' && Number.isInteger(v)) {
    const name = Object.keys(E.values).find((k) => E.values[k] === v);
    if (name === undefined) fail(where, `${v} is not a value of enum ${strip(E.fullName)}`);
    return { name, num: v };
  }
  return fail(where, `expected an enum name of ${strip(E.fullName)}, got ${describe(v)}`);
}

function fieldFor(T, key) {
  for (const f of T.fieldsArray) {
    if (f.name === key || camel(f.name) === key) return f;
    if (f.options && f.options.json_name === key) return f;
  }
  return null;
}

// Field of a (possibly camelCase-spelled, as protobufjs bundles them) WKT.
function wktField(T, protoName) {
  const f = fieldFor(T, protoName) || fieldFor(T, camel(protoName));
  if (!f) throw new Error(`${strip(T.fullName)} has no field ${protoName}`);
  return f.name;
}

const WKT = {
  'google.protobuf.Any': checkAny,
  'google.protobuf.Duration': (T, v, where) => {
    const m = typeof v === 'string' ? /^(-)?([0-9]+)(?:\.([0-9]{1,9}))?s$/.exec(v) : null;
    if (!m) fail(where, `expected a Duration like "1.5s", got ${describe(v)}`);
    const secs = BigInt(m[2]);
    if (secs > 315576000000n) fail(where, `Duration ${v} is out of range`);
    const nanos = Number((m[3] || '').padEnd(9, '0')) || 0;
    const neg = m[1] === '-';
    return { [wktField(T, 'seconds')]: (neg ? -secs : secs).toString(), [wktField(T, 'nanos')]: neg ? -nanos : nanos };
  },
  'google.protobuf.Timestamp': (T, v, where) => {
    const m = typeof v === 'string'
      ? /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})$/.exec(v)
      : null;
    const ms = m ? Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[8]}`) : NaN;
    if (!m || Number.isNaN(ms)) fail(where, `expected an RFC 3339 Timestamp, got ${describe(v)}`);
    return { [wktField(T, 'seconds')]: String(Math.floor(ms / 1000)), [wktField(T, 'nanos')]: Number((m[7] || '').padEnd(9, '0')) || 0 };
  },
  'google.protobuf.Struct': (T, v, where) => {
    if (!isObj(v)) fail(where, `expected a JSON object (Struct), got ${describe(v)}`);
    const VT = findType('google.protobuf.Value');
    const fields = {};
    for (const [k, x] of Object.entries(v)) fields[k] = checkValue(VT, x, `${where}.${k}`);
    return { [wktField(T, 'fields')]: fields };
  },
  'google.protobuf.Value': (T, v, where) => checkValue(T, v, where),
  'google.protobuf.ListValue': (T, v, where) => {
    if (!Array.isArray(v)) fail(where, `expected a JSON array (ListValue), got ${describe(v)}`);
    const VT = findType('google.protobuf.Value');
    return { [wktField(T, 'values')]: v.map((x, i) => checkValue(VT, x, `${where}[${i}]`)) };
  },
  'google.protobuf.FieldMask': (T, v, where) => {
    if (typeof v !== 'string') fail(where, `expected a FieldMask string, got ${describe(v)}`);
    return { [wktField(T, 'paths')]: v === '' ? [] : v.split(',').map((s) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)) };
  },
  'google.protobuf.Empty': (T, v, where) => {
    if (!isObj(v) || Object.keys(v).length) fail(where, `expected {} (Empty), got ${describe(v)}`);
    return {};
  },
};
for (const w of ['Double', 'Float', 'Int64', 'UInt64', 'Int32', 'UInt32', 'Bool', 'String', 'Bytes']) {
  WKT[`google.protobuf.${w}Value`] = (T, v, where) => {
    const f = T.fields[wktField(T, 'value')];
    return { [f.name]: checkScalar(f.type, v, where) };
  };
}

function checkValue(VT, v, where) {
  const k = (n) => wktField(VT, n);
  if (v === null) return { [k('null_value')]: 0 };
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) fail(where, 'a Struct number must be finite');
    return { [k('number_value')]: v };
  }
  if (typeof v === 'string') return { [k('string_value')]: v };
  if (typeof v === 'boolean') return { [k('bool_value')]: v };
  if (Array.isArray(v)) return { [k('list_value')]: WKT['google.protobuf.ListValue'](findType('google.protobuf.ListValue'), v, where) };
  return { [k('struct_value')]: WKT['google.protobuf.Struct'](findType('google.protobuf.Struct'), v, where) };
}

function checkAny(T, v, where) {
  if (!isObj(v)) fail(where, `expected an object (Any), got ${describe(v)}`);
  const url = v['@type'];
  if (url === undefined && Object.keys(v).length === 0) return {};
  if (typeof url !== 'string' || url === '') fail(where, 'an Any needs a "@type" string');
  if (!url.includes('/')) fail(`${where}.@type`, `"${url}" is not a type URL (type.googleapis.com/NAME)`);
  const name = url.slice(url.lastIndexOf('/') + 1);
  const IT = findType(name);
  if (!IT) fail(`${where}.@type`, `"${url}" names no message in the official protos`);
  const rest = { ...v };
  delete rest['@type'];
  let inner;
  const iname = strip(IT.fullName);
  if (WKT[iname] && iname !== 'google.protobuf.Empty') {
    const extra = Object.keys(rest).filter((x) => x !== 'value');
    if (extra.length) fail(`${where}.${extra[0]}`, `an Any of ${iname} has only "@type" and "value"`);
    if (!('value' in rest)) fail(where, `an Any of ${iname} needs "value"`);
    inner = checkMessage(IT, rest.value, `${where}.value`);
  } else {
    inner = checkMessage(IT, rest, `${where}<${iname}>`);
  }
  const bytes = roundTrip(IT, inner, where);
  return { [wktField(T, 'type_url')]: url, [wktField(T, 'value')]: bytes };
}

function checkSingle(f, v, where) {
  const t = f.resolvedType;
  if (t instanceof protobuf.Type) return checkMessage(t, v, where);
  if (t instanceof protobuf.Enum) return checkEnum(t, v, where);
  return checkScalar(f.type, v, where);
}

const norm = (x) => (isObj(x) && 'num' in x && 'name' in x && Object.keys(x).length === 2 ? x.name : x);

function checkMessage(T, v, where) {
  const full = strip(T.fullName);
  if (WKT[full]) return WKT[full](T, v, where);
  if (!isObj(v)) fail(where, `expected an object (${full}), got ${describe(v)}`);
  const out = {};
  const raw = {}; // field name -> checked value (enums as {name, num}) for the rules
  for (const [key, val] of Object.entries(v)) {
    const at = `${where}.${key}`;
    const f = fieldFor(T, key);
    if (!f) {
      const near = T.fieldsArray.map((x) => x.name).filter((n) => n.includes(key.toLowerCase().slice(0, 4)));
      fail(at, `unknown field "${key}" in ${full}${near.length ? ` (similar: ${near.slice(0, 4).join(', ')})` : ''}`);
    }
    if (f.name in raw) fail(at, `field ${f.name} of ${full} given twice`);
    if (f.options && f.options.deprecated) notes.push(`note: ${at}: ${full}.${f.name} is deprecated`);
    if (val === null && strip((f.resolvedType && f.resolvedType.fullName) || '') !== 'google.protobuf.Value') {
      continue; // null = the default
    }
    let checked;
    if (f.map) {
      if (!isObj(val)) fail(at, `expected a JSON object (map<${f.keyType}, ...>), got ${describe(val)}`);
      checked = {};
      for (const [mk, mv] of Object.entries(val)) {
        if (f.keyType !== 'string') {
          if (f.keyType === 'bool') { if (mk !== 'true' && mk !== 'false') fail(`${at}.${mk}`, 'a bool map key must be "true" or "false"'); }
          else checkScalar(f.keyType, mk, `${at}.${mk}`);
        }
        checked[mk] = checkSingle(f, mv, `${at}.${mk}`);
      }
      out[f.name] = Object.fromEntries(Object.entries(checked).map(([a, b]) => [a, norm(b)]));
    } else if (f.repeated) {
      if (!Array.isArray(val)) fail(at, `expected an array (repeated ${f.type}), got ${describe(val)}`);
      checked = val.map((x, i) => checkSingle(f, x, `${at}[${i}]`));
      out[f.name] = checked.map(norm);
    } else {
      checked = checkSingle(f, val, at);
      out[f.name] = norm(checked);
    }
    raw[f.name] = checked;
  }
  for (const o of T.oneofsArray) {
    const set = o.fieldsArray.filter((f) => f.name in raw);
    if (set.length > 1) fail(where, `${full}: oneof ${o.name} has ${set.map((f) => f.name).join(' and ')}; at most one may be set`);
    if (!set.length && o.options && o.options['(validate.required)']) {
      fail(where, `${full}: one of ${o.fieldsArray.map((f) => f.name).join(', ')} is required (oneof ${o.name})`);
    }
  }
  for (const f of T.fieldsArray) applyRules(T, f, raw, `${where}.${f.name}`);
  return out;
}

function scalarDefault(f) {
  if (f.resolvedType instanceof protobuf.Enum) {
    const name = Object.keys(f.resolvedType.values).find((k) => f.resolvedType.values[k] === 0);
    return { name, num: 0 };
  }
  switch (f.type) {
    case 'string': return '';
    case 'bytes': return Buffer.alloc(0);
    case 'bool': return false;
    default: return f.type.endsWith('64') ? '0' : 0;
  }
}

function kindOf(f) {
  return f.resolvedType instanceof protobuf.Enum ? 'enum' : f.type;
}

function applyRules(T, f, raw, where) {
  const rules = rulesOf(f);
  if (!rules) return;
  const present = f.name in raw;
  const what = `${strip(T.fullName)}.${f.name}`;
  const isMsg = f.resolvedType instanceof protobuf.Type;
  // the rules of a oneof member hold only when it is the one set
  const inRealOneof = f.partOf && !(f.options && f.options.proto3_optional);
  if (!present && inRealOneof) return;
  for (const k of ['message', 'any', 'duration', 'timestamp']) {
    if (rules[k] && rules[k].required && !present) fail(where, `${what} is required`);
  }
  if (f.map) {
    const n = present ? Object.keys(raw[f.name]).length : 0;
    const r = rules.map || {};
    if (r.min_pairs !== undefined && n < r.min_pairs) fail(where, `${what} needs at least ${r.min_pairs} entr(ies)`);
    if (r.max_pairs !== undefined && n > r.max_pairs) fail(where, `${what} takes at most ${r.max_pairs} entries`);
    if (present && r.keys) for (const k of Object.keys(raw[f.name])) valueRules(r.keys, f.keyType, k, `${where}.${k}`, `key of ${what}`);
    return;
  }
  if (f.repeated) {
    const items = present ? raw[f.name] : [];
    const r = rules.repeated || {};
    if (r.min_items !== undefined && items.length < r.min_items) fail(where, `${what} needs at least ${r.min_items} item(s)`);
    if (r.max_items !== undefined && items.length > r.max_items) fail(where, `${what} takes at most ${r.max_items} items`);
    if (r.unique) {
      const seen = new Set(items.map((x) => JSON.stringify(norm(x))));
      if (seen.size !== items.length) fail(where, `${what} items must be unique`);
    }
    if (r.items && !isMsg) items.forEach((x, i) => valueRules(r.items, kindOf(f), x, `${where}[${i}]`, `${what}[${i}]`));
    return;
  }
  if (isMsg) {
    if (present && rules.duration && strip(f.resolvedType.fullName) === 'google.protobuf.Duration') {
      durationRules(rules.duration, raw[f.name], where, what);
    }
    return;
  }
  // proto3 scalars: the rules hold for the default value too
  valueRules(rules, kindOf(f), present ? raw[f.name] : scalarDefault(f), where, what);
}

function roundTrip(T, obj, where) {
  const full = strip(T.fullName);
  let msg;
  try {
    msg = T.fromObject(obj);
  } catch (e) {
    fail(where, `protobufjs fromObject(${full}) failed: ${e.message}`);
  }
  const err = T.verify(msg);
  if (err) fail(where, `protobufjs verify(${full}): ${err}`);
  const a = T.encode(msg).finish();
  let b;
  try {
    b = T.encode(T.decode(a)).finish();
  } catch (e) {
    fail(where, `${full} does not decode after encoding: ${e.message}`);
  }
  if (Buffer.compare(Buffer.from(a), Buffer.from(b)) !== 0) fail(where, `${full} changes in an encode/decode round trip`);
  return Buffer.from(a);
}

// ---- main ------------------------------------------------------------------------------------------

function readValues(file) {
  const text = fs.readFileSync(file, 'utf8');
  try {
    const v = JSON.parse(text);
    return Array.isArray(v) ? { values: v, many: true } : { values: [v], many: false };
  } catch (e) {
    const lines = text.split('\n').map((l, i) => [l.trim(), i + 1]).filter(([l]) => l !== '');
    if (lines.length < 2) throw new Error(`not JSON: ${e.message}`);
    return {
      values: lines.map(([l, n]) => {
        try {
          return JSON.parse(l);
        } catch (e2) {
          throw new Error(`line ${n} is not JSON: ${e2.message}`);
        }
      }),
      many: true,
    };
  }
}

function main(argv) {
  if (argv.length !== 2) {
    console.error('usage: node proto_json_check.js TYPE|any FILE.json');
    return 2;
  }
  const [typeArg, file] = argv;
  const typeName = typeArg === 'any' ? 'google.protobuf.Any' : typeArg;
  let T;
  let input;
  try {
    loadFiles(WKT_FILES);
    T = findType(typeName);
    if (!T) {
      console.error(`proto_json_check: no message ${typeName} in the official protos under ${XDS_DEPS}`);
      return 2;
    }
  } catch (e) {
    console.error(`proto_json_check: cannot load the official protos (run tests/interop/setup.sh): ${e.message}`);
    return 2;
  }
  try {
    input = readValues(file);
  } catch (e) {
    console.error(`proto_json_check: ${file}: ${e.message}`);
    return 2;
  }
  try {
    input.values.forEach((v, i) => {
      const where = input.many ? `[${i}]` : '';
      if (typeName === 'google.protobuf.Any' && !(isObj(v) && typeof v['@type'] === 'string')) {
        fail(where, 'each element needs a "@type"');
      }
      const obj = checkMessage(T, v, where);
      roundTrip(T, obj, where || '(top)');
    });
  } catch (e) {
    if (!(e instanceof CheckError)) throw e;
    for (const n of notes) console.error(n);
    console.error(`proto_json_check: ${file}: ${e.where}: ${e.message}`);
    return 1;
  }
  for (const n of notes) console.error(n);
  const count = input.many ? ` (${input.values.length} element${input.values.length === 1 ? '' : 's'})` : '';
  console.log(`ok ${typeName} ${file}${count}`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
