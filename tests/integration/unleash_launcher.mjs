// Starts the npm package unleash-server in this process, for the integration harness
// (tests/integration/unleash_server.py). Everything comes from the environment so the Python side
// owns the ports and paths; tokens come from INIT_*_API_TOKENS, read by Unleash itself.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const env = process.env;
// The package is installed outside the repository, so resolve it from the install folder.
const entry = createRequire(join(env.UNLEASH_INSTALL_DIR, 'package.json')).resolve('unleash-server');
const { start } = await import(pathToFileURL(entry).href);

await start({
    db: {
        host: '127.0.0.1',
        port: Number(env.UNLEASH_DB_PORT),
        user: env.UNLEASH_DB_USER,
        password: 'unused-trust-auth',
        database: env.UNLEASH_DB_NAME,
        ssl: false,
    },
    server: { host: '127.0.0.1', port: Number(env.UNLEASH_HTTP_PORT) },
    logLevel: env.UNLEASH_LOG_LEVEL || 'warn',
    // No calls leave the machine: no version check, no telemetry.
    versionCheck: { enable: false },
    telemetry: false,
});
