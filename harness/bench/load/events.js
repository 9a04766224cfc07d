// The seed's HTTP load, shared by seed.js and open_loop.js: one event per POST /publish,
// a share of re-sends of events this VU sent before and the service accepted, two
// counters to check the service's /stats against, and the summary the seed printed.
//
// Environment: BASE_URL (http://127.0.0.1:8080, `harness serve`'s default), RESEND
// (0.3), TOPICS (10), RUN_ID (a fresh one per run), SUMMARY (a path for the JSON summary).

import http from 'k6/http';
import { Counter } from 'k6/metrics';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const RESEND = Number(__ENV.RESEND || 0.3);
const TOPICS = Number(__ENV.TOPICS || 10);
// What a VU keeps to re-send from: its most recent accepted events.
const REMEMBERED = 1000;

// Events in 2xx responses, re-sends included: what /stats counts as `received`.
const accepted = new Counter('accepted');
// Accepted events that were not re-sends: what /stats counts as `unique_processed`.
const fresh = new Counter('fresh');

// p50 is `med`; p(99) is not in k6's default list.
export const summaryTrendStats = ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'];

// Each VU runs this module in its own runtime: these belong to one VU.
let sent = 0;
const mine = [];

/** The run's id, made once in setup() and handed to every VU, so event ids never collide. */
export function newRun() {
  const random = Math.floor(Math.random() * 36 ** 6).toString(36);
  return { runId: __ENV.RUN_ID || `k6-${Date.now().toString(36)}-${random}` };
}

/** The scripts' setup(): the run's id, handed to every VU. */
export function setup() {
  return newRun();
}

/** The scripts' iteration: one POST /publish. */
export default function (data) {
  publishOne(data);
}

function freshEvent(runId) {
  sent += 1;
  return JSON.stringify({
    topic: `k6-${sent % TOPICS}`,
    event_id: `${runId}-${__VU}-${sent}`,
    timestamp: new Date().toISOString(),
    source: 'k6',
    payload: { vu: __VU, n: sent, message: 'the seed load test' },
  });
}

/** One POST /publish: a re-send of an event this VU had accepted (RESEND of the time,
 * once there is one), else a new event. */
export function publishOne(data) {
  const resend = mine.length > 0 && Math.random() < RESEND;
  const body = resend ? mine[Math.floor(Math.random() * mine.length)] : freshEvent(data.runId);
  const res = http.post(`${BASE_URL}/publish`, body, {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'POST /publish' },
  });
  if (res.status < 200 || res.status >= 300) {
    return;
  }
  const queued = Number(res.json('queued'));
  accepted.add(queued);
  if (!resend) {
    fresh.add(queued);
    mine.push(body);
    if (mine.length > REMEMBERED) {
      mine.shift();
    }
  }
}

function metric(data, name, field) {
  const m = data.metrics[name];
  return m && m.values[field] !== undefined ? m.values[field] : 0;
}

function grouped(n) {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** The numbers of a run as a plain object: what the text and the JSON summary show. */
export function numbers(data, script, load) {
  const requests = metric(data, 'http_reqs', 'count');
  const failed = metric(data, 'http_req_failed', 'passes');
  const acceptedEvents = metric(data, 'accepted', 'count');
  const freshEvents = metric(data, 'fresh', 'count');
  return {
    format: 1,
    script,
    base_url: BASE_URL,
    run_id: data.setup_data ? data.setup_data.runId : null,
    load,
    duration_s: data.state.testRunDurationMs / 1000,
    requests,
    requests_per_s: metric(data, 'http_reqs', 'rate'),
    latency_ms: {
      p50: metric(data, 'http_req_duration', 'med'),
      p95: metric(data, 'http_req_duration', 'p(95)'),
      p99: metric(data, 'http_req_duration', 'p(99)'),
      avg: metric(data, 'http_req_duration', 'avg'),
      max: metric(data, 'http_req_duration', 'max'),
    },
    failed_requests: failed,
    error_rate: requests > 0 ? failed / requests : 0,
    accepted: acceptedEvents,
    fresh: freshEvents,
    resent: acceptedEvents - freshEvents,
    dropped_iterations: metric(data, 'dropped_iterations', 'count'),
    vus_max: metric(data, 'vus_max', 'max'),
  };
}

/** handleSummary for both scripts: the seed's lines on stdout, the JSON to $SUMMARY. */
export function summary(data, script, load) {
  const n = numbers(data, script, load);
  const ms = (v) => `${v.toFixed(1)} ms`;
  const lines = [
    '',
    `${script} against ${n.base_url}: ${n.duration_s.toFixed(1)} s, up to ${n.vus_max} VUs`,
    `  requests/s   ${n.requests_per_s.toFixed(1)}  (${grouped(n.requests)} requests)`,
    `  latency      p50 ${ms(n.latency_ms.p50)}   p95 ${ms(n.latency_ms.p95)}   p99 ${ms(n.latency_ms.p99)}`,
    `  errors       ${(100 * n.error_rate).toFixed(2)}%  (${grouped(n.failed_requests)} failed)`,
    `  events       ${grouped(n.accepted)} accepted = ${grouped(n.fresh)} fresh + ${grouped(n.resent)} re-sent`,
  ];
  if (load.executor === 'constant-arrival-rate') {
    lines.push(`  dropped      ${grouped(n.dropped_iterations)} iterations (k6 had no VU free)`);
  }
  const out = { stdout: `${lines.join('\n')}\n\n` };
  if (__ENV.SUMMARY) {
    out[__ENV.SUMMARY] = JSON.stringify(n, null, 2);
  }
  return out;
}
