export { metricValue } from './prom-text';
