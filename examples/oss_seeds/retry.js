// Retry an async operation with exponential backoff and jitter.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function retry(fn, { attempts = 5, baseMs = 100, maxMs = 5000 } = {}) {
  let lastError;
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      lastError = err;
      if (attempt === attempts - 1) break;
      const delay = Math.min(maxMs, baseMs * 2 ** attempt);
      await sleep(delay / 2 + Math.random() * (delay / 2));
    }
  }
  throw lastError;
}

module.exports = { retry };
