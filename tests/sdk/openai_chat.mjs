// Drives keypool with the official OpenAI Node SDK, as a team would:
//   node openai_chat.mjs <baseURL> <apiKey>
// baseURL is keypool's /v1/openai/v1 and apiKey a keypool team token. Makes one plain and
// two streamed chat completions (the second, model "long-stream", lasts about 17 s, as a
// reasoning model's does) and prints a JSON summary on stdout; exits non-zero (with the
// error on stderr) when any call fails.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
if (!baseURL || !apiKey) {
  console.error("usage: node openai_chat.mjs <baseURL> <apiKey>");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const messages = [{ role: "user", content: "Say hello" }];

try {
  const plain = await client.chat.completions.create({ model: "gpt-4o-mini", messages });

  const readStream = async (model) => {
    const started = Date.now();
    const stream = await client.chat.completions.create({ model, messages, stream: true });
    let content = "";
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      content += chunk.choices?.[0]?.delta?.content ?? "";
    }
    return { chunks, content, seconds: (Date.now() - started) / 1000 };
  };
  const streamed = await readStream("gpt-4o-mini");
  const long = await readStream("long-stream");

  console.log(JSON.stringify({
    ok: true,
    plain: { id: plain.id, content: plain.choices[0].message.content, usage: plain.usage ?? null },
    stream: { chunks: streamed.chunks, content: streamed.content },
    long,
  }));
} catch (err) {
  console.error(`openai_chat failed: ${err?.status ?? ""} ${err?.message ?? err}`);
  process.exit(1);
}
