/**
 * The batch queue (BullMQ on Redis), as the CLI uses it. The CLI loads this module only when a queue command runs
 * (`await import`), so that bullmq and ioredis do not slow down the start of every other command.
 */
export { connectForCommand, connectForWorker, displayUrl } from './connection';
export { checkJobName } from './store';
export { collectJob, jobStatus } from './status';
export type { JobStatus } from './status';
export { submitJob } from './submit';
export { BatchWorker } from './worker';
