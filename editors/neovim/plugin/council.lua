-- council.nvim: nothing runs until require("council").setup(opts) is called.
if vim.g.loaded_council then
  return
end
vim.g.loaded_council = 1
