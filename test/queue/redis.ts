/**
 * A real redis-server for the queue tests: started on a free loopback port with persistence off, so that a
 * restart (kill + start on the same port) loses everything, as a Redis without persistence does.
 *
 * Without redis-server on PATH the tests skip with a message — or fail when ADAINFER_REQUIRE_SHARED=1 (CI, whose
 * .ci/run installs Debian's redis-server), so CI never passes having run none of them.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { sharedRequired } from '../helpers';

export function redisServerPath(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, 'redis-server');
    if (dir && fs.existsSync(file)) return file;
  }
  return undefined;
}

/** describe() over a redis-server binary; skips with a message when there is none (fails with ADAINFER_REQUIRE_SHARED=1). */
export function describeRedis(name: string, fn: (server: string) => void): void {
  const server = redisServerPath();
  if (!server) {
    const message = 'redis-server is not on PATH (Debian: apt-get install redis-server); the queue tests need a real Redis';
    if (sharedRequired()) throw new Error(`ADAINFER_REQUIRE_SHARED=1 but ${message}`);
    console.warn(`skipped: ${message}`);
    describe.skip(`${name} (skipped: no redis-server)`, () => {
      test('needs redis-server', () => undefined);
    });
    return;
  }
  describe(name, () => fn(server));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.setTimeout(500, () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      got += d.toString();
      if (got.includes('\r\n')) {
        s.destroy();
        resolve(got.startsWith('+PONG'));
      }
    });
  });
}

export class RedisServer {
  private child: ChildProcess | undefined;

  private constructor(
    private readonly binary: string,
    readonly port: number,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(binary: string): Promise<RedisServer> {
    const server = new RedisServer(binary, await freePort());
    await server.spawn();
    return server;
  }

  private async spawn(): Promise<void> {
    const child = spawn(this.binary, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {
      stdio: 'ignore',
    });
    this.child = child;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode} on port ${this.port}`);
      if (await ping(this.port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not answer on port ${this.port}`);
  }

  /** SIGKILL (no persistence: every key is lost). */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  }

  /** A crash and a restart on the same port: an empty Redis. */
  async restart(): Promise<void> {
    await this.kill();
    await this.spawn();
  }

  async stop(): Promise<void> {
    await this.kill();
  }
}
