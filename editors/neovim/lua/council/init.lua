-- council.nvim: Neovim client for `council lsp` (SLM Coding Council).
-- Requires Neovim >= 0.11 (vim.lsp.config / vim.lsp.enable).
local M = {}

M.name = "council"

---@class council.Options
local defaults = {
  cmd = { "council", "lsp" },
  filetypes = { "python" },
  root_markers = { "council.toml", "pyproject.toml", ".git" },
  -- The council.toml table (providers, roles, council, router, completion, privacy,
  -- sandbox, deliberate; every key is in docs/settings.md). Sent as initializationOptions
  -- and answered to workspace/configuration section "council"; the server checks it.
  settings = {},
  -- Extra environment for the server process.
  cmd_env = nil,
  inline = {
    enabled = true,
    -- "auto": native vim.lsp.inline_completion when it exists (Neovim >= 0.12),
    -- otherwise the extmark ghost-text fallback; "native"; "ghost"; false to disable.
    mode = "auto",
    debounce_ms = 150,
    -- false (or completion.trigger = "manual" in settings): only the trigger key asks
    auto_trigger = true,
    keymaps = { accept = "<Tab>", accept_word = "<M-Right>", accept_line = "<M-Down>",
      dismiss = "<C-]>", next = "<M-]>", prev = "<M-[>", trigger = "<M-\\>" },
    hl_group = "Comment",
  },
  -- Review before apply (the server's `council.confirm_edits`, on by default): Generate's
  -- edits and Debug's fixes open in a floating diff first. Keys are a key or a list of
  -- keys; false applies edits at once (the plugin then does not advertise change
  -- annotations, so the server sends plain edits).
  review = {
    keys = { accept = { "a", "<CR>" }, reject = { "r", "q", "<Esc>" } },
    border = "rounded",
  },
  -- Called with (title, message) for run results; default: vim.notify.
  notify = nil,
}

M.options = vim.deepcopy(defaults)

-- Checks the plugin's own options only. The `settings` keys belong to the server: it
-- validates them against its settings model, reports each bad value (window/showMessage)
-- and uses that key's default, so a second copy of the rules here could only drift.
local function validate(opts)
  vim.validate("opts", opts, "table")
  vim.validate("cmd", opts.cmd, function(v)
    return type(v) == "function" or (type(v) == "table" and #v > 0 and vim.iter(v):all(function(s)
      return type(s) == "string"
    end))
  end, "a non-empty list of strings or a function")
  vim.validate("filetypes", opts.filetypes, "table")
  vim.validate("root_markers", opts.root_markers, "table")
  vim.validate("settings", opts.settings, "table")
  vim.validate("cmd_env", opts.cmd_env, "table", true)
  vim.validate("notify", opts.notify, "function", true)
  vim.validate("inline", opts.inline, { "table", "boolean" })
  vim.validate("review", opts.review, { "table", "boolean" })
  if type(opts.review) == "table" then
    vim.validate("review.keys", opts.review.keys, "table")
  end
  if type(opts.inline) == "table" then
    vim.validate("inline.debounce_ms", opts.inline.debounce_ms, "number")
    vim.validate("inline.keymaps", opts.inline.keymaps, "table")
    vim.validate("inline.mode", opts.inline.mode, function(v)
      return v == "auto" or v == "native" or v == "ghost"
    end, '"auto", "native" or "ghost"')
  end
end

--- Active council progress tokens: [client_id][token] = title
M.progress = {}

local function notify(msg, level)
  if M.options.notify then
    M.options.notify(msg, level)
  else
    vim.notify(msg, level or vim.log.levels.INFO, { title = "council" })
  end
end

---@return vim.lsp.Client?
function M.client(bufnr)
  local clients = vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
  if #clients == 0 then
    clients = vim.lsp.get_clients({ name = M.name })
  end
  return clients[1]
end

--- Arguments for a document command: {uri, range, query?}.
--- Without a visual range the range is empty, at the cursor: the server resolves the symbol
--- there (one resolver for every editor; see council/symbols.py).
function M.doc_args(cmdopts, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local args = { uri = vim.uri_from_bufnr(bufnr) }
  if cmdopts and cmdopts.range and cmdopts.range > 0 then
    local last = vim.api.nvim_buf_get_lines(bufnr, cmdopts.line2 - 1, cmdopts.line2, false)[1] or ""
    args.range = {
      start = { line = cmdopts.line1 - 1, character = 0 },
      ["end"] = { line = cmdopts.line2 - 1, character = vim.str_utfindex(last, "utf-16") },
    }
  else
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, false)[1] or ""
    local here = { line = row - 1, character = vim.str_utfindex(line:sub(1, col), "utf-16") }
    args.range = { start = here, ["end"] = here }
  end
  if cmdopts and cmdopts.args and cmdopts.args ~= "" then
    args.query = cmdopts.args
  end
  return args
end

local function summarize(command, result)
  if type(result) ~= "table" then
    return command .. ": " .. vim.inspect(result)
  end
  local parts = { command .. ": " .. tostring(result.status or (result.applied and "applied") or "done") }
  if result.message then
    table.insert(parts, result.message)
  elseif result.summary then
    table.insert(parts, tostring(result.summary))
  end
  if result.seconds then
    table.insert(parts, string.format("%.1fs", result.seconds))
  end
  if result.costUsd then
    table.insert(parts, string.format("$%.4f", result.costUsd))
  end
  return table.concat(parts, " | ")
end

--- Execute a server command. `on_result(err, result)` is optional.
function M.exec(command, args, on_result, bufnr)
  local client = M.client(bufnr)
  if not client then
    notify("council: the language server is not running for this buffer", vim.log.levels.ERROR)
    return
  end
  local cmd = { title = command, command = command, arguments = { args or {} } }
  local handler = function(err, result)
    if on_result then
      on_result(err, result)
    end
    if err then
      notify(command .. " failed: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    elseif command ~= "council.providers" and command ~= "council.cancel" then
      notify(summarize(command, result))
    end
  end
  if client.exec_cmd then
    client:exec_cmd(cmd, { bufnr = bufnr or vim.api.nvim_get_current_buf() }, handler)
  else
    client:request("workspace/executeCommand", cmd, handler, bufnr or 0)
  end
  return client
end

--- Send window/workDoneProgress/cancel for every active council token, then council.cancel.
function M.cancel()
  local n = 0
  for client_id, tokens in pairs(M.progress) do
    local client = vim.lsp.get_client_by_id(client_id)
    if client then
      for token in pairs(tokens) do
        client:notify("window/workDoneProgress/cancel", { token = token })
        n = n + 1
      end
    end
  end
  if M.client() then
    M.exec("council.cancel", {})
  end
  notify(("council: cancelling %d run(s)"):format(n))
  return n
end

local function show_providers(err, result)
  if err or type(result) ~= "table" then
    return
  end
  local rows = result.providers or result
  local lines = {}
  for _, r in ipairs(rows) do
    table.insert(lines, string.format("%-10s %-28s %-9s %s %s", r.provider or "?", r.model or "?",
      tostring(r.health or ""), r.latency_ms and (math.floor(r.latency_ms) .. "ms") or "-", r.error or ""))
  end
  M.last_providers = rows
  notify(#lines > 0 and table.concat(lines, "\n") or "council: no providers")
end

local function create_commands()
  local cmd = vim.api.nvim_create_user_command
  cmd("CouncilGenerate", function(o)
    M.exec("council.generate", M.doc_args(o))
  end, { range = true, nargs = "*", desc = "Council: Generate implementation" })
  cmd("CouncilDebug", function(o)
    M.exec("council.debug", M.doc_args(o))
  end, { range = true, nargs = "*", desc = "Council: Debug the function at the cursor" })
  cmd("CouncilAddTests", function(o)
    M.exec("council.addTests", M.doc_args(o))
  end, { range = true, nargs = "*", desc = "Council: Add tests for the symbol at the cursor" })
  cmd("CouncilRun", function(o)
    local run = function(q)
      if q and q ~= "" then
        local a = { query = q }
        if vim.bo.filetype == "python" then
          a.uri = vim.uri_from_bufnr(0)
        end
        M.exec("council.run", a)
      end
    end
    if o.args ~= "" then run(o.args) else vim.ui.input({ prompt = "Council run: " }, run) end
  end, { nargs = "*", desc = "Council: free-form run" })
  cmd("CouncilDeliberate", function(o)
    local run = function(q)
      if q and q ~= "" then M.exec("council.deliberate", { query = q }) end
    end
    if o.args ~= "" then run(o.args) else vim.ui.input({ prompt = "Council deliberate: " }, run) end
  end, { nargs = "*", desc = "Council: consensus mode" })
  cmd("CouncilCancel", function()
    M.cancel()
  end, { desc = "Council: cancel running council runs" })
  cmd("CouncilProviders", function()
    M.exec("council.providers", {}, show_providers)
  end, { desc = "Council: show providers and their health" })
end

local function setup_progress(group)
  vim.api.nvim_create_autocmd("LspProgress", {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if not client or client.name ~= M.name then
        return
      end
      local params = ev.data.params or {}
      local value = params.value or {}
      local id = ev.data.client_id
      M.progress[id] = M.progress[id] or {}
      if value.kind == "begin" then
        M.progress[id][params.token] = value.title or true
      elseif value.kind == "end" then
        M.progress[id][params.token] = nil
      end
    end,
  })
end

function M.setup(opts)
  opts = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  if opts.inline == false then
    opts.inline = vim.tbl_extend("force", vim.deepcopy(defaults.inline), { enabled = false })
  end
  validate(opts)
  M.options = opts
  if vim.fn.has("nvim-0.11") == 0 then
    notify("council.nvim needs Neovim >= 0.11", vim.log.levels.ERROR)
    return
  end
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  capabilities.textDocument = capabilities.textDocument or {}
  capabilities.textDocument.inlineCompletion = capabilities.textDocument.inlineCompletion
    or { dynamicRegistration = false }
  local handlers = nil
  if opts.review then
    -- Neovim 0.11 advertises no changeAnnotationSupport; with it the server sends edits that
    -- need confirmation, which council.review shows before applying
    capabilities.workspace = capabilities.workspace or {}
    capabilities.workspace.workspaceEdit = capabilities.workspace.workspaceEdit or {}
    capabilities.workspace.workspaceEdit.changeAnnotationSupport = { groupsOnLabel = false }
    local review = require("council.review")
    review.setup(opts.review)
    handlers = { ["workspace/applyEdit"] = review.handler }
  end
  local settings = opts.settings
  vim.lsp.config(M.name, {
    cmd = opts.cmd,
    cmd_env = opts.cmd_env,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    capabilities = capabilities,
    handlers = handlers,
    init_options = { council = settings },
    settings = { council = settings },
  })
  vim.lsp.enable(M.name)
  local group = vim.api.nvim_create_augroup("council", { clear = true })
  create_commands()
  require("council.runs").setup() -- :CouncilRuns, refreshed on council/runsChanged
  setup_progress(group)
  if opts.inline.enabled then
    require("council.inline").setup(opts.inline, group)
  end
end

--- Push changed settings to running servers (applies to the next run; no restart).
function M.update_settings(settings)
  M.options.settings = vim.tbl_deep_extend("force", M.options.settings, settings or {})
  for _, client in ipairs(vim.lsp.get_clients({ name = M.name })) do
    client.settings = { council = M.options.settings }
    client:notify("workspace/didChangeConfiguration", { settings = client.settings })
  end
end

return M
