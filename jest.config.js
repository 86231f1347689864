// Tests are written in TypeScript and compiled by `tsc` (npm test runs it first); jest runs the
// compiled files, so worker threads and the native addon load exactly as they do for users.
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/test'],
  testMatch: ['**/*.test.js'],
  testTimeout: 120000,
  maxWorkers: 2,
};
