-- Minimal init for the e2e tests: the plugin from the repo, the server command from the env.
local root = os.getenv("COUNCIL_PLUGIN_DIR")
vim.opt.runtimepath:prepend(root)
vim.opt.swapfile = false
vim.opt.shadafile = "NONE"
vim.lsp.log.set_level(os.getenv("COUNCIL_LSP_LOG_LEVEL") or "WARN")
require("council").setup({
  cmd = vim.json.decode(os.getenv("COUNCIL_CMD")),
  settings = { completion = { backend = os.getenv("COUNCIL_BACKEND") or "specialist" } },
  inline = { debounce_ms = 50 },
  notify = function(msg, level)
    _G.council_messages = _G.council_messages or {}
    table.insert(_G.council_messages, msg)
  end,
})
