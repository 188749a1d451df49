// Drives keypool with the official OpenAI Node SDK, as a team would:
//   node openai_chat.mjs <baseURL> <apiKey>
// baseURL is keypool's /v1/openai/v1 and apiKey a keypool team token. Makes one plain and
// one streamed chat completion and prints a JSON summary on stdout; exits non-zero (with the
// error on stderr) when either call fails.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
if (!baseURL || !apiKey) {
  console.error("usage: node openai_chat.mjs <baseURL> <apiKey>");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });
const messages = [{ role: "user", content: "Say hello" }];

try {
  const plain = await client.chat.completions.create({ model: "gpt-4o-mini", messages });

  const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
  let streamed = "";
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    streamed += chunk.choices?.[0]?.delta?.content ?? "";
  }

  console.log(JSON.stringify({
    ok: true,
    plain: { id: plain.id, content: plain.choices[0].message.content, usage: plain.usage ?? null },
    stream: { chunks, content: streamed },
  }));
} catch (err) {
  console.error(`openai_chat failed: ${err?.status ?? ""} ${err?.message ?? err}`);
  process.exit(1);
}
