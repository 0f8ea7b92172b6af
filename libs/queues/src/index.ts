export { QUEUE, QUEUE_NAMES, BULL_PREFIX, type QueueName } from './names';
export * from './payloads.schema';
export { QUEUE_SETTINGS, type QueueSettings } from './settings';
export { createQueues, closeQueues, enqueue, enqueueBulk, type TallyQueues } from './queues';
export { jobIdFor } from './job-id';
