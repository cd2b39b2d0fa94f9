-- :CouncilExplain: the server's explanation of the last inline completion
-- (council/explainCompletion), shown in a scratch Markdown buffer.
local M = {}

local function council_client(bufnr)
  return vim.lsp.get_clients({ name = "council", bufnr = bufnr })[1]
end

--- Show markdown (an explanation) in a scratch buffer in a split below.
function M.show(markdown)
  if M.bufnr and vim.api.nvim_buf_is_valid(M.bufnr) then
    vim.api.nvim_buf_delete(M.bufnr, { force = true })
  end
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(markdown, "\n", { plain = true }))
  vim.bo[buf].filetype = "markdown"
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].modifiable = false
  pcall(vim.api.nvim_buf_set_name, buf, "council://explain")
  vim.cmd("botright split")
  vim.api.nvim_win_set_buf(0, buf)
  M.bufnr = buf
  return buf
end

--- :CouncilExplain: the last completion of this buffer (or of the last buffer that asked):
--- the prompt window, the raw model answer and each post-processing step, from the server.
function M.open(bufnr)
  local inline = require("council.inline")
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if not council_client(bufnr) and inline.last_bufnr and vim.api.nvim_buf_is_valid(inline.last_bufnr) then
    bufnr = inline.last_bufnr
  end
  local client = council_client(bufnr) or require("council").client()
  if not client then
    vim.notify("council: the language server is not running", vim.log.levels.ERROR)
    return false
  end
  local params = council_client(bufnr) and { uri = vim.uri_from_bufnr(bufnr) } or {}
  client:request("council/explainCompletion", params, function(err, result)
    if err or type(result) ~= "table" or type(result.markdown) ~= "string" then
      vim.notify("council: explain failed: " .. vim.inspect(err or result), vim.log.levels.ERROR)
      return
    end
    M.show(result.markdown)
  end)
  return true
end

return M
