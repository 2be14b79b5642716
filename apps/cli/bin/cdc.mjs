#!/usr/bin/env node
// The built bundle (pnpm build); from a checkout without a build, run `pnpm cdc …` (tsx).
import '../dist/main.js';
