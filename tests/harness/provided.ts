/** What the global setup hands every test file (vitest `provide` / `inject`). */
import type { ServerUrls } from './servers.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    servers: ServerUrls;
  }
}

export {};
