// The seed document's JavaScript client, unchanged but for where the key and URL come from.
//   API_KEY=... BASE_URL=http://localhost:3000 node examples/clients/sessions.js
const apiKey = process.env.API_KEY || "YOUR_API_KEY";
const baseUrl = process.env.BASE_URL || "http://localhost:3000";

// Get connected sessions
async function getConnectedSessions() {
  const response = await fetch(`${baseUrl}/sessions/connected`, {
    headers: {
      Authorization: `Bearer ${apiKey}`,
      "Content-Type": "application/json",
    },
  });

  const data = await response.json();
  console.log("Connected sessions:", JSON.stringify(data));
  return data;
}

// Get all sessions
async function getAllSessions() {
  const response = await fetch(`${baseUrl}/sessions/all`, {
    headers: {
      Authorization: `Bearer ${apiKey}`,
      "Content-Type": "application/json",
    },
  });

  const data = await response.json();
  console.log("All sessions:", JSON.stringify(data));
  return data;
}

module.exports = { getConnectedSessions, getAllSessions };

if (require.main === module) {
  (async () => {
    await getConnectedSessions();
    await getAllSessions();
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
