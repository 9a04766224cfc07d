// The seed report's K6 scenario: ramp to 50 VUs over 30 s, hold 100 VUs for 60 s, ramp
// down over 30 s; one event per POST /publish, 30% re-sends of accepted events.
//
//   k6 run harness/bench/load/seed.js                       # against `python -m harness serve`
//   SCALE=0.05 SUMMARY=out.json k6 run harness/bench/load/seed.js   # 6 s instead of 2 minutes
//
// SCALE multiplies every stage's duration; the rest of the environment is in events.js.

import { summary, summaryTrendStats } from './events.js';

// every script's setup() and iteration are the same
export { default, setup } from './events.js';

const SCALE = Number(__ENV.SCALE || 1);
const seconds = (s) => `${Math.round(s * SCALE * 1000)}ms`;

const stages = [
  { duration: seconds(30), target: 50 },
  { duration: '0s', target: 100 },
  { duration: seconds(60), target: 100 },
  { duration: seconds(30), target: 0 },
];

export const options = {
  scenarios: {
    seed: { executor: 'ramping-vus', startVUs: 0, stages },
  },
  summaryTrendStats,
};

export function handleSummary(data) {
  return summary(data, 'seed.js', { executor: 'ramping-vus', scale: SCALE, stages });
}
