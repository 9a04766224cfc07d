// The seed's event mix offered open loop: RATE POST /publish a second for DURATION,
// whatever the service's latency (k6's constant-arrival-rate). When no VU is free at an
// intended start, k6 drops that iteration and counts it in dropped_iterations.
//
//   RATE=500 DURATION=30s k6 run harness/bench/load/open_loop.js
//
// PRE_VUS and MAX_VUS size k6's pool (defaults: enough for 100 ms and 500 ms per request;
// k6's docs advise preallocating: starting a VU mid-run costs the load generator time);
// the rest of the environment is in events.js.

import { summary, summaryTrendStats } from './events.js';

// every script's setup() and iteration are the same
export { default, setup } from './events.js';

const RATE = Number(__ENV.RATE || 500);
const DURATION = __ENV.DURATION || '30s';
const MAX_VUS = Number(__ENV.MAX_VUS || Math.max(100, Math.ceil(RATE / 2)));
const PRE_VUS = Number(__ENV.PRE_VUS || Math.min(MAX_VUS, Math.max(20, Math.ceil(RATE / 10))));

export const options = {
  scenarios: {
    open_loop: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  summaryTrendStats,
};

export function handleSummary(data) {
  return summary(data, 'open_loop.js', {
    executor: 'constant-arrival-rate',
    rate: RATE,
    duration: DURATION,
    pre_allocated_vus: PRE_VUS,
    max_vus: MAX_VUS,
  });
}
